"""Alerts test fixtures.

- `make_notification`: builds a fall alarm notification for a family member (with a full alarm context);
  keyword arguments replace its fields, `recipient=` a whole Recipient.
"""

from __future__ import annotations

from typing import Any

import pytest

from alerts.models import (
    AlertState,
    ChannelName,
    Notification,
    QuietHours,
    Recipient,
    RecipientKind,
    Severity,
)

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
