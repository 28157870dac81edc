"""An in-process MQTT broker (amqtt) for the zero-setup demo; production and tests use Mosquitto.

amqtt speaks MQTT 3.1.1 only (no shared subscriptions, no session expiry), which is enough for one process of
each component on one machine. Clients connecting to it must use MQTT 3.1.1.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from amqtt.broker import Broker

from careloop.ports import free_port


@asynccontextmanager
async def embedded_broker(host: str = "127.0.0.1", port: int | None = None) -> AsyncIterator[str]:
    """Run an anonymous-access amqtt broker while the context is open; yields its mqtt:// URL."""
    port = port or free_port(host)
    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}", "max_connections": 1000}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    for name in ("amqtt", "transitions"):  # amqtt logs every connection at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    broker = Broker(config)
    await broker.start()
    try:
        yield f"mqtt://{host}:{port}"
    finally:
        await broker.shutdown()
