"""Alerts test fixtures: a real SMTP server (aiosmtpd) on a free port, and notifications to send.

- `smtp_server`: an aiosmtpd server in its own thread that keeps every message it accepts; tell it to answer a
  recipient or the DATA command with an error (e.g. "451 ..." or "550 ...") to test both kinds of failure. It
  offers AUTH PLAIN / LOGIN (user `SMTP_USER`, password `SMTP_PASSWORD`) without requiring it.
- `make_notification`: builds a fall alarm notification for a family member (with a full alarm context);
  keyword arguments replace its fields, `recipient=` a whole Recipient.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
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
from careloop.ports import free_port

SMTP_USER = "careloop"
SMTP_PASSWORD = "s3cret-relay"


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
