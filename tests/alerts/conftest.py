"""Alerts test fixtures: a real SMTP server (aiosmtpd) and a real HTTP webhook receiver (uvicorn), on free ports.

- `smtp_server`: an aiosmtpd server in its own thread that keeps every message it accepts; tell it to answer a
  recipient or the DATA command with an error (e.g. "451 ..." or "550 ...") to test both kinds of failure. It
  offers AUTH PLAIN / LOGIN (user `SMTP_USER`, password `SMTP_PASSWORD`) without requiring it.
- `make_notification`: builds a fall alarm notification for a family member (with a full alarm context);
  keyword arguments replace its fields, `recipient=` a whole Recipient.
- `webhook_receiver`: an ASGI app served by uvicorn that checks every request's signature with
  `alerts.notify.webhook.verify_signature`, answers 401 when it does not verify, and otherwise follows a script of
  replies (`answer(status, headers)`, or `hang()` until the test ends), then 200.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from alerts.models import (
    AlertState,
    ChannelName,
    Notification,
    QuietHours,
    Recipient,
    RecipientKind,
    Severity,
)
from alerts.notify.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from careloop.ports import free_port

SMTP_USER = "careloop"
SMTP_PASSWORD = "s3cret-relay"
WEBHOOK_SECRET = b"test-webhook-secret"


# -- notifications --------------------------------------------------------------------------------------------------
FAMILY = Recipient(
    recipient_id="family-7",
    kind=RecipientKind.FAMILY,
    name="Eva Berg",
    role="daughter",
    email="eva.berg@family.example",
    phone="+46701234567",
    channels=(ChannelName.EMAIL, ChannelName.WEBHOOK),
    quiet_hours=QuietHours("22:00", "07:00", "Europe/Stockholm"),
)

CONTEXT: dict[str, object] = {
    "resident_name": "Anna Berg",
    "timezone": "Europe/Stockholm",
    "value": 0.93,
    "conditions": ["atrial fibrillation", "COPD"],
    "medications": [{"name": "Apixaban", "dose": "5 mg twice daily"}, "Salbutamol inhaler"],
    "allergies": ["penicillin"],
    "vitals": [
        {"ts": 1_790_000_000.0 + 60 * i, "hr_bpm": 96.0 + 4 * i, "spo2_pct": 95.0 - i, "skin_temp_c": 33.5}
        for i in range(10)
    ],
    "location": {"room": "bathroom", "ts": 1_790_000_540.0},
    "address": ["Storgatan 1", "111 22 Stockholm"],
    "contacts": [{"name": "Eva Berg", "relation": "daughter", "phone": "+46701234567"}],
}


def _notification(**overrides: Any) -> Notification:
    fields: dict[str, Any] = {
        "notification_id": "ntf-000042",
        "alert_id": "al-000123",
        "resident_id": "r-0001",
        "home_id": "h0001",
        "kind": "fall",
        "severity": Severity.HIGH,
        "state": AlertState.OPEN,
        "recipient": FAMILY,
        "channel": ChannelName.EMAIL,
        "title": "Anna Berg may have fallen",
        "body": 'A fall was detected in the bathroom and Anna did not press "I\'m OK".',
        "created_ts": 1_790_000_571.0,
        "link": "https://console.care.example/alerts/al-000123",
        "context": CONTEXT,
    }
    fields.update(overrides)
    return Notification(**fields)


@pytest.fixture
def make_notification() -> Any:
    """A factory of notifications (a family member's fall alarm unless told otherwise)."""
    return _notification


# -- SMTP -----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ReceivedMail:
    """One message the SMTP server accepted: the envelope and the raw message bytes."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    authenticated_as: str | None


class MailSink:
    """An aiosmtpd handler that stores accepted mail and answers with errors it is told to give."""

    def __init__(self) -> None:
        self.messages: list[ReceivedMail] = []
        #: recipient address (lower case) -> the reply to RCPT TO, e.g. "550 5.1.1 no such mailbox"
        self.rcpt_replies: dict[str, str] = {}
        #: when set, the reply to DATA instead of accepting, e.g. "451 4.3.0 try again later"
        self.data_reply: str | None = None
        self._lock = threading.Lock()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]) -> str:
        reply = self.rcpt_replies.get(address.lower())
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_reply is not None:
            return self.data_reply
        login = session.auth_data if session.authenticated else None
        user = login.login.decode() if isinstance(login, LoginPassword) else None
        with self._lock:
            self.messages.append(
                ReceivedMail(envelope.mail_from, tuple(envelope.rcpt_tos), bytes(envelope.content), user)
            )
        return "250 2.0.0 queued as test-1"


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == SMTP_USER.encode()
        and auth_data.password == SMTP_PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


@dataclass(frozen=True, slots=True)
class SmtpServer:
    """A running test SMTP server."""

    host: str
    port: int
    sink: MailSink


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A real SMTP server (aiosmtpd) on a free 127.0.0.1 port, for this test only."""
    sink = MailSink()
    host = "127.0.0.1"
    controller = Controller(
        sink,
        hostname=host,
        port=free_port(host),
        authenticator=_authenticate,
        auth_require_tls=False,  # plain AUTH on loopback, as a local relay allows it
        ready_timeout=10.0,
    )
    controller.start()
    try:
        yield SmtpServer(host, controller.port, sink)
    finally:
        controller.stop()


# -- webhooks ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted answer of the webhook receiver; `hang` holds the request open until the test ends."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"ok":true}'
    hang: bool = False


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One request the receiver got, and whether its signature verified."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    signature_ok: bool


class WebhookReceiver:
    """A webhook endpoint as a gateway runs it: verify the signature over the raw body, then answer."""

    def __init__(self, secret: bytes, port: int) -> None:
        self.secret = secret
        self.port = port
        self.url = f"http://127.0.0.1:{port}/hooks/careloop"
        self.requests: list[ReceivedRequest] = []
        self.script: deque[Reply] = deque()
        self.release = asyncio.Event()

    def answer(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"{}") -> None:
        """Answer the next verified request with this status (after any answers scripted before)."""
        self.script.append(Reply(status, dict(headers or {}), body))

    def hang(self) -> None:
        """Hold the next verified request open, unanswered, until the test ends."""
        self.script.append(Reply(hang=True))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        signature_ok = verify_signature(
            self.secret,
            headers.get(TIMESTAMP_HEADER.lower(), ""),
            body,
            headers.get(SIGNATURE_HEADER.lower(), ""),
            now=time.time(),
        )
        self.requests.append(ReceivedRequest(scope["method"], scope["path"], headers, body, signature_ok))
        if not signature_ok:
            reply = Reply(401, body=b"bad signature")
        else:
            reply = self.script.popleft() if self.script else Reply()
        if reply.hang:
            await self.release.wait()
            return
        raw_headers = [(b"content-type", b"application/json")]
        raw_headers += [(k.lower().encode(), v.encode()) for k, v in reply.headers.items()]
        await send({"type": "http.response.start", "status": reply.status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": reply.body})


@pytest.fixture
async def webhook_receiver() -> AsyncIterator[WebhookReceiver]:
    """A real HTTP server (uvicorn) on a free 127.0.0.1 port that checks signatures with WEBHOOK_SECRET."""
    # Bound and listening before uvicorn starts: a request sent at once waits in the backlog, no polling needed.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    receiver = WebhookReceiver(WEBHOOK_SECRET, sock.getsockname()[1])
    config = uvicorn.Config(receiver, interface="asgi3", lifespan="off", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="webhook-receiver")
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.should_exit = True
        await task
        sock.close()
