"""The zero-setup demo: an embedded MQTT broker and SQLite, and every component that joins the demo.

Components join by declaring an entry point in the `careloop.demo` group: an async callable taking a
`DemoContext`, run as a task beside the others. Each sets `ctx.ready` once it listens (the demo bracelet starts
when every component is ready), tells its own story, and returns; the demo ends when all have returned. The kernel
never imports them by name. First the demo tours the kernel: a bracelet publishes through the wire contract, a
receiver validates every message, and rejected ones are counted by reason and dead-lettered.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiomqtt

from careloop import messages as m
from careloop.clock import Clock, SystemClock
from careloop.codec import PayloadError, encode
from careloop.contract import SPECS, decode_message
from careloop.embedded_broker import embedded_broker
from careloop.topics import TopicKind, TopicTree

HOME = "H00001"  # the first home and bracelet of the generated registry
BRACELET = "BR-R00001"
DEMO_RESIDENTS = 20
COMPONENT = "demo"


@dataclass
class DemoContext:
    """What a component needs to take part in the demo."""

    broker_url: str
    tree: TopicTree
    db_url: str
    workdir: Path
    clock: Clock
    say: Callable[[str], None]
    #: Set by the component once it listens; the demo bracelet waits for every component's.
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set by the kernel when its tour is over: the bracelet's script sent and the receiver's verdicts printed.
    tour_done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _Tally:
    accepted: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    dead_letters: int = 0


def demo_client(url: str, client_id: str) -> aiomqtt.Client:
    """An MQTT 3.1.1 client of the demo's embedded broker at `url` (the components' demos use it too)."""
    parts = urlsplit(url)
    return aiomqtt.Client(
        parts.hostname or "127.0.0.1",
        parts.port or 1883,
        identifier=client_id,
        protocol=aiomqtt.ProtocolVersion.V311,
    )


def _bracelet_script(now: float) -> list[tuple[TopicKind, bytes, str]]:
    """What the demo bracelet sends: (topic kind, payload, what it shows)."""
    good: list[tuple[TopicKind, m.Message, str]] = [
        (TopicKind.DEVICE_AVAILABILITY, m.Availability(online=True, since=now), "comes online"),
        (TopicKind.DEVICE_WEAR, m.WearStatus(ts=now, worn=True), "is worn"),
    ]
    for i in range(3):
        reading = m.VitalsReading(
            ts=now + i, hr_bpm=71.0 + i, spo2_pct=97.0, skin_temp_c=33.2, ppg_quality=0.95, motion_g=0.01
        )
        good.append((TopicKind.DEVICE_VITALS, reading, f"vitals #{i + 1}"))
    samples = tuple((0.0, -1.0, 0.02 * (i % 5)) for i in range(50))
    good.append((TopicKind.DEVICE_ACCEL, m.AccelBatch(t0=now + 3, samples_g=samples), "one second of accelerometer"))
    good.append((TopicKind.DEVICE_SOS, m.SosPress(ts=now + 4), "SOS pressed"))
    script = [(kind, encode(message), label) for kind, message, label in good]
    nan = float("nan")
    bad = [
        (TopicKind.DEVICE_VITALS, json.dumps({"v": 1, "ts": now, "hr_bpm": 400, "ppg_quality": 0.9}), "HR 400"),
        (TopicKind.DEVICE_VITALS, json.dumps({"v": 1, "ts": now, "hr_bpm": nan, "ppg_quality": 0.9}), "HR NaN"),
        (TopicKind.DEVICE_VITALS, json.dumps({"v": 1, "ts": now + 86_400, "hr_bpm": 70, "ppg_quality": 1}), "future"),
        (TopicKind.DEVICE_GPS, json.dumps({"v": 1, "ts": now, "lat": "31.2", "lon": 121.4, "accuracy_m": 5}), "text"),
        (TopicKind.DEVICE_SOS, "{not json", "broken JSON"),
    ]
    script += [(kind, text.encode(), f"malformed: {label}") for kind, text, label in bad]
    return script


async def _bracelet(ctx: DemoContext, sent: asyncio.Event) -> None:
    """Publish the scripted messages of one bracelet, at QoS 1."""
    async with demo_client(ctx.broker_url, "demo-bracelet") as client:
        for kind, payload, label in _bracelet_script(ctx.clock.now()):
            spec = SPECS[kind]
            topic = ctx.tree.device(kind, HOME, BRACELET)
            await client.publish(topic, payload, qos=spec.qos, retain=spec.retain)
            ctx.say(f"  bracelet {BRACELET} -> {topic.split('/')[-1]:<12} {label}")
            await asyncio.sleep(0.05)
    sent.set()


async def _receiver(ctx: DemoContext, tally: _Tally, expected: int, ready: asyncio.Event) -> None:
    """Validate every device message of the home against the contract; dead-letter the rejects."""
    async with demo_client(ctx.broker_url, "demo-receiver") as client:
        await client.subscribe(ctx.tree.home_devices_filter(HOME), qos=1)
        ready.set()
        seen = 0
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            topic = str(message.topic)
            seen += 1
            try:
                parsed, decoded = decode_message(ctx.tree, topic, payload, now=ctx.clock.now())
            except PayloadError as exc:
                tally.rejected[exc.reason.value] += 1
                ctx.say(f"  receiver  REJECTED {topic.split('/')[-1]:<12} {exc.reason.value}: {exc.detail}")
                letter = m.DeadLetter(
                    ts=ctx.clock.now(),
                    component=COMPONENT,
                    topic=topic,
                    reason=exc.reason.value,
                    detail=exc.detail[:2000],
                    payload_b64=base64.b64encode(payload[:65_536]).decode(),
                    payload_size=len(payload),
                )
                await client.publish(ctx.tree.dead_letter(COMPONENT), encode(letter), qos=1)
                tally.dead_letters += 1
            else:
                tally.accepted[parsed.kind.name] += 1
                ctx.say(f"  receiver  accepted {topic.split('/')[-1]:<12} {type(decoded).__name__}")
            if seen >= expected:
                return


def _load_registry(db_url: str, say: Callable[[str], None]) -> str:
    """Import a generated registry (residents, devices, health records) and describe the demo bracelet's wearer."""
    from careloop.registry.importer import import_csv
    from careloop.registry.store import device_by_code, open_registry
    from careloop.testing.registry_csv import generate_registry_csv

    data = generate_registry_csv(DEMO_RESIDENTS, seed=7)
    with open_registry(db_url) as registry:
        report = import_csv(
            registry.engine,
            [
                (f"{kind}.csv", text.encode())
                for kind, text in (("residents", data.residents), ("devices", data.devices), ("health", data.health))
            ],
        )
        if not report.ok:
            raise RuntimeError("demo registry import failed: " + "; ".join(str(e) for e in report.errors))
        say(f"registry: {data.n_residents} residents, {data.n_homes} homes, {data.n_devices} devices imported")
        with registry.session() as session:
            device = device_by_code(session, BRACELET)
            if device is None or device.resident is None:
                raise RuntimeError(f"demo bracelet {BRACELET} is not in the registry")
            resident = device.resident
            profile = resident.health_profile
            conditions = ", ".join(profile.conditions) if profile is not None and profile.conditions else "none"
            return f"{resident.name} ({resident.code}, conditions: {conditions})"


async def run_demo(workdir: Path, say: Callable[[str], None] = print, timeout_s: float = 60.0) -> _Tally:
    """Run the demo end to end and return what the receiver counted."""
    workdir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before anything runs
    (workdir / "careloop.db").unlink(missing_ok=True)
    tally = _Tally()
    async with embedded_broker() as url:
        ctx = DemoContext(
            broker_url=url,
            tree=TopicTree(),
            db_url=f"sqlite:///{workdir / 'careloop.db'}",
            workdir=workdir,
            clock=SystemClock(),
            say=say,
        )
        say(f"embedded MQTT broker at {url}; state in {workdir}")
        wearer = await asyncio.to_thread(_load_registry, ctx.db_url, say)
        say(f"bracelet {BRACELET} in home {HOME} is worn by {wearer}")
        components: list[Callable[[DemoContext], Coroutine[Any, Any, None]]] = [
            ep.load() for ep in entry_points(group="careloop.demo")
        ]
        expected = len(_bracelet_script(time.time()))
        ready, sent = asyncio.Event(), asyncio.Event()
        contexts = [replace(ctx, ready=asyncio.Event()) for _ in components]  # one `ready` each, one `tour_done`
        async with asyncio.timeout(timeout_s), asyncio.TaskGroup() as tasks:
            receiver = tasks.create_task(_receiver(ctx, tally, expected, ready), name="receiver")
            for component, component_ctx in zip(components, contexts, strict=True):
                tasks.create_task(component(component_ctx), name=getattr(component, "__name__", "component"))
            await ready.wait()
            for component_ctx in contexts:
                await component_ctx.ready.wait()
            tasks.create_task(_bracelet(ctx, sent), name="bracelet")
            await receiver
            accepted = sum(tally.accepted.values())
            rejected = ", ".join(f"{reason} {n}" for reason, n in sorted(tally.rejected.items()))
            say(
                f"accepted {accepted} messages; rejected {sum(tally.rejected.values())} ({rejected}); "
                f"{tally.dead_letters} dead letters published"
            )
            ctx.tour_done.set()  # the components tell the rest of the story; the demo ends when all have returned
    return tally
