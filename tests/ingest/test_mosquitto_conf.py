"""The Mosquitto configuration careloop ships (deploy/mosquitto/) keeps every QoS 1 message for ingest.

Mosquitto's default `max_queued_messages 1000` silently drops QoS 1 messages for a slow or offline subscriber. The
shipped file and the one the test launcher generates must both lift it; the shipped file is also run for real: an
offline ingest session gets 3,000 messages when it comes back, and the ACL lets devices write only their own topics.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from careloop.broker_auth import mosquitto_password_line
from careloop.contract import SPECS
from careloop.mqtt5 import MqttClient, Received, SessionOptions
from careloop.testing.mosquitto import Mosquitto
from careloop.testing.mqtt_publisher import publish_all
from careloop.testing.service_fixtures import _launch
from careloop.topics import TopicKind, TopicTree

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"
SHIPPED = DEPLOY / "careloop.conf"
WAIT_S = 20.0


def settings_of(text: str) -> dict[str, list[str]]:
    """Every option of a mosquitto.conf and the values it is given, in order."""
    options: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition(" ")
            options.setdefault(name, []).append(value.strip())
    return options


def generated_config() -> str:
    broker = Mosquitto()
    try:
        broker._prepare()
        return broker.config_path.read_text()
    finally:
        broker.close()


@pytest.mark.parametrize("source", ["shipped", "generated"])
def test_no_queue_limit_and_sessions_that_persist(source: str) -> None:
    options = settings_of(SHIPPED.read_text() if source == "shipped" else generated_config())
    assert options["max_queued_messages"] == ["0"]
    assert options["max_queued_bytes"] == ["0"]
    assert options["persistence"] == ["true"]


def test_the_largest_contract_message_fits_a_packet() -> None:
    options = settings_of(SHIPPED.read_text())
    largest_payload = max(spec.max_bytes for spec in SPECS.values())
    assert int(options["max_packet_size"][0]) >= largest_payload + 1024  # topic and header


class ShippedMosquitto(Mosquitto):
    """Mosquitto run with deploy/mosquitto/careloop.conf: its own port and paths, no TLS listener (no certs here)."""

    def _prepare(self) -> None:
        text = SHIPPED.read_text()
        text = re.sub(r"(?m)^listener 1883 127\.0\.0\.1$", f"listener {self.port} {self.host}", text)
        text = re.sub(r"(?m)^(listener 8883|certfile .*|keyfile .*|cafile .*)$", "", text)
        text = re.sub(r"(?m)^persistence_location .*$", f"persistence_location {self.workdir}/", text)
        text = re.sub(r"(?m)^log_dest .*$", f"log_dest file {self.workdir / 'broker.log'}", text)
        passwords = self.workdir / "passwords"
        passwords.write_text("".join(mosquitto_password_line(u, p) + "\n" for u, p in self.users.items()))
        passwords.chmod(0o600)
        acl = self.workdir / "acl"
        acl.write_text((DEPLOY / "acl").read_text())
        acl.chmod(0o600)
        text = re.sub(r"(?m)^password_file .*$", f"password_file {passwords}", text)
        text = re.sub(r"(?m)^acl_file .*$", f"acl_file {acl}", text)
        self.config_path.write_text(text + f"\nuser {self._user()}\n")

    @staticmethod
    def _user() -> str:
        import os
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name


@pytest.fixture
def shipped_broker() -> Iterator[Mosquitto]:
    users = {"careloop-ingest": "ingest-pw", "BR-0001": "dev-pw", "BR-0002": "dev2-pw"}
    yield from _launch(lambda: ShippedMosquitto(users=users, allow_anonymous=False))


async def test_an_offline_ingest_session_gets_every_message_when_it_returns(shipped_broker: Mosquitto) -> None:
    tree = TopicTree()
    received: list[Received] = []
    options = SessionOptions("careloop-ingest-0", username="careloop-ingest", password="ingest-pw")
    client = await MqttClient.connect(shipped_broker.host, shipped_broker.port, options, received.extend)
    await client.subscribe([TopicTree.shared("ingest", tree.filter(TopicKind.DEVICE_VITALS))])
    await client.disconnect()  # offline, session kept
    mine = tree.device(TopicKind.DEVICE_VITALS, "H0001", "BR-0001")
    not_mine = tree.device(TopicKind.DEVICE_VITALS, "H0002", "BR-0002")
    await publish_all(
        shipped_broker.host,
        shipped_broker.port,
        [(mine, b"%d" % i) for i in range(3000)] + [(not_mine, b"forged")],
        connections=1,
        username="BR-0001",
        password="dev-pw",
    )
    client = await MqttClient.connect(shipped_broker.host, shipped_broker.port, options, received.extend)
    try:
        acked = 0
        async with asyncio.timeout(WAIT_S):
            while len(received) < 3000:
                await asyncio.sleep(0.05)
                client.ack([pid for _, _, pid in received[acked:]])
                acked = len(received)
        await asyncio.sleep(0.3)
        assert [payload for _, payload, _ in received] == [b"%d" % i for i in range(3000)]  # nothing forged either
    finally:
        await client.disconnect()
