"""alerts/notify/render.py: what a responder reads, in the recipient's time, escaped, whatever the context holds."""

from __future__ import annotations

import html
from html.parser import HTMLParser
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts.models import AlertState, QuietHours, Recipient, RecipientKind, Severity
from alerts.notify.render import kind_label, render, subject_line


class _TextOf(HTMLParser):
    """The visible text of an HTML document and the hrefs of its links."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.hrefs: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.hrefs += [value or "" for name, value in attrs if name == "href"]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def visible(document: str) -> _TextOf:
    parser = _TextOf()
    parser.feed(document)
    return parser


def test_every_fact_and_the_whole_context_are_in_both_parts(make_notification: Any) -> None:
    rendered = render(make_notification())
    page = visible(rendered.html)
    html_text = " ".join(page.text)
    for part in (rendered.text, html_text):
        for expected in (
            "Anna Berg (r-0001)",
            "Fall",
            "HIGH",
            "open",
            "0.93",
            "2026-09-21 16:22:51 CEST",
            "https://console.care.example/alerts/al-000123",
            "atrial fibrillation",
            "Apixaban: 5 mg twice daily",
            "Salbutamol inhaler",
            "penicillin",
            "Heart rate: 132 bpm (range 96-132 bpm)",
            "SpO2: 86 % (range 86-95 %)",
            "10 readings, 16:13:20 CEST - 16:22:20 CEST",
            "room: bathroom",
            "Storgatan 1, 111 22 Stockholm",
            "Eva Berg (daughter): +46701234567",
        ):
            assert expected in part, (expected, part)
    assert page.hrefs == ["https://console.care.example/alerts/al-000123"]


def test_times_are_in_the_recipients_zone_else_the_homes_else_utc(make_notification: Any) -> None:
    abroad = Recipient(
        "family-9", RecipientKind.FAMILY, "Lars", quiet_hours=QuietHours("23:00", "06:00", "America/New_York")
    )
    assert "2026-09-21 10:22:51 EDT" in render(make_notification(recipient=abroad)).text
    no_zone = Recipient("family-9", RecipientKind.FAMILY, "Lars")
    assert "2026-09-21 16:22:51 CEST" in render(make_notification(recipient=no_zone)).text  # the home's
    nowhere = make_notification(recipient=no_zone, context={"timezone": "Mars/Olympus"})
    assert "2026-09-21 14:22:51 UTC" in render(nowhere).text


def test_text_from_data_is_escaped_and_only_http_links_are_clickable(make_notification: Any) -> None:
    context = {
        "resident_name": 'Anna "<img src=x onerror=alert(1)>"',
        "conditions": ["<script>steal()</script>"],
        "contacts": [{"name": "Eva & Co", "phone": "<b>1</b>"}],
    }
    notification = make_notification(
        context=context, title="<h1>title</h1>", body="line 1\n<i>line 2</i>", link="javascript:alert(1)"
    )
    page = visible(render(notification).html)
    assert set(page.tags) <= {"html", "head", "meta", "title", "body", "h2", "h3", "p", "strong", "br", "table"} | {
        "tr",
        "th",
        "td",
        "ul",
        "li",
    }
    text = "".join(page.text)
    assert "<script>steal()</script>" in text  # shown as text, not run
    assert 'Anna "<img src=x onerror=alert(1)>"' in text
    assert "Eva & Co" in text
    assert page.hrefs == []
    assert "javascript:alert(1)" in text


def test_the_subject_says_severity_kind_resident_and_a_later_state(make_notification: Any) -> None:
    assert subject_line(make_notification()) == "[HIGH] Fall: Anna Berg (r-0001)"
    resolved = make_notification(state=AlertState.RESOLVED, severity=Severity.MEDIUM, kind="night_wandering")
    assert subject_line(resolved) == "[MEDIUM] Night wandering: Anna Berg (r-0001) - resolved"
    assert subject_line(make_notification(context={})) == "[HIGH] Fall: r-0001"
    assert subject_line(make_notification(context={"resident_name": "Anna\r\nBcc: x@y"})) == (
        "[HIGH] Fall: Anna Bcc: x@y (r-0001)"
    )


def test_kind_labels() -> None:
    assert kind_label("sos") == "SOS"
    assert kind_label("hr_high") == "Heart rate high"
    assert kind_label("spo2_trend_down") == "Spo2 trend down"


def test_an_empty_context_still_renders_the_facts(make_notification: Any) -> None:
    rendered = render(make_notification(context={}, link=None))
    assert "Fall" in rendered.text
    assert "Open the alert" not in rendered.text
    assert "Conditions" not in rendered.text


def test_unknown_context_keys_are_shown_too(make_notification: Any) -> None:
    rendered = render(make_notification(context={"key_safe": "code at the door", "do_not_resuscitate": True}))
    assert "Key safe:\n  - code at the door" in rendered.text
    assert "Do not resuscitate:\n  - yes" in rendered.text


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["ts", "name", "hr_bpm", "room"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.text(max_size=8) | st.sampled_from(["ts", "name", "lat", "lon", "hr_bpm", "relation"]), inner, max_size=4
        )
    ),
    max_leaves=20,
)
_keys = st.sampled_from(
    [
        *("resident_name", "timezone", "value", "unit", "conditions", "medications", "allergies", "vitals"),
        *("location", "address", "contacts", "other"),
    ]
)


# make_notification is a pure factory: sharing it across examples is safe
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(context=st.dictionaries(_keys, _json, max_size=8))
def test_rendering_never_fails_on_odd_context(make_notification: Any, context: dict[str, Any]) -> None:
    rendered = render(make_notification(context=context))
    assert "Fall" in rendered.text
    assert "\n" not in rendered.subject
    page = visible(rendered.html)
    assert page.hrefs == ["https://console.care.example/alerts/al-000123"]
    for value in context.values():
        if isinstance(value, str) and value.strip() and "<" in value:
            assert html.escape(value.strip()) not in rendered.text
