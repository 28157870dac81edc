"""alerts/notify/email.py against a real SMTP server (aiosmtpd): what the family receives, and how failures are told."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from typing import Any

import pytest

from alerts.models import DeliveryError, Recipient, RecipientKind, Severity
from alerts.notify.email import EmailNotifier, message_id_for
from careloop.ports import free_port

SENDER = "careloop alerts <alerts@care.example>"


def notifier(server: Any, **options: Any) -> EmailNotifier:
    return EmailNotifier(server.host, server.port, SENDER, timeout_s=5, **options)


def parse(content: bytes) -> EmailMessage:
    message = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def parts(message: EmailMessage) -> tuple[str, str]:
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None
    assert html is not None
    return text.get_content(), html.get_content()


async def test_the_family_email_arrives_with_resident_kind_severity_and_link(
    smtp_server: Any, make_notification: Any
) -> None:
    notification = make_notification()
    receipt = await notifier(smtp_server).send(notification)

    assert receipt.startswith("SMTP 250")
    assert len(smtp_server.sink.messages) == 1
    mail = smtp_server.sink.messages[0]
    assert mail.rcpt_tos == ("eva.berg@family.example",)
    assert mail.mail_from == "alerts@care.example"
    message = parse(mail.content)
    assert message["Subject"] == "[HIGH] Fall: Anna Berg (r-0001)"
    assert message["To"] == "Eva Berg <eva.berg@family.example>"
    assert message["Message-ID"] == "<careloop.ntf-000042@care.example>"
    assert message["X-Careloop-Alert"] == "al-000123"
    assert message["X-Careloop-Notification"] == "ntf-000042"
    assert message["Auto-Submitted"] == "auto-generated"
    text, html = parts(message)
    for part in (text, html):
        assert "Anna Berg (r-0001)" in part
        assert "Fall" in part
        assert "HIGH" in part
        assert "https://console.care.example/alerts/al-000123" in part
        assert "penicillin" in part  # the alarm context travels with it
        assert "Storgatan 1, 111 22 Stockholm" in part
    assert '<a href="https://console.care.example/alerts/al-000123">' in html
    # the time is the recipient's (Stockholm, summer time), not the server's
    assert "2026-09-21 16:22:51 CEST" in text


async def test_a_retried_notification_is_the_same_email(smtp_server: Any, make_notification: Any) -> None:
    sender = notifier(smtp_server)
    await sender.send(make_notification())
    await sender.send(make_notification())
    first, second = (parse(m.content) for m in smtp_server.sink.messages)
    assert first["Message-ID"] == second["Message-ID"]
    assert first["Subject"] == second["Subject"]
    other = notifier(smtp_server)
    await other.send(make_notification(notification_id="ntf-000043"))
    assert parse(smtp_server.sink.messages[2].content)["Message-ID"] == "<careloop.ntf-000043@care.example>"


async def test_resident_data_cannot_inject_headers_or_html(smtp_server: Any, make_notification: Any) -> None:
    context = {"resident_name": "Anna\r\nBcc: everyone@evil.example <script>x</script>", "allergies": ["<b>nuts</b>"]}
    await notifier(smtp_server).send(make_notification(context=context, link="javascript:alert(1)"))
    message = parse(smtp_server.sink.messages[0].content)
    assert message["Bcc"] is None
    assert smtp_server.sink.messages[0].rcpt_tos == ("eva.berg@family.example",)
    assert "\n" not in message["Subject"]
    _, html = parts(message)
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "&lt;b&gt;nuts&lt;/b&gt;" in html
    assert 'href="javascript' not in html


async def test_without_a_link_the_console_address_is_shown(smtp_server: Any, make_notification: Any) -> None:
    await notifier(smtp_server, console_url="https://console.care.example/").send(make_notification(link=None))
    text, html = parts(parse(smtp_server.sink.messages[0].content))
    assert "Open the alert: https://console.care.example/" in text
    assert 'href="https://console.care.example/"' in html


async def test_a_reminder_is_labelled_as_one(smtp_server: Any, make_notification: Any) -> None:
    await notifier(smtp_server).send(
        make_notification(kind="battery_low", severity=Severity.REMINDER, context={"resident_name": "Anna Berg"})
    )
    assert parse(smtp_server.sink.messages[0].content)["Subject"] == "[REMINDER] Battery low: Anna Berg (r-0001)"


async def test_unknown_mailbox_is_a_permanent_failure(smtp_server: Any, make_notification: Any) -> None:
    smtp_server.sink.rcpt_replies["eva.berg@family.example"] = "550 5.1.1 <eva.berg@family.example>: no such user"
    with pytest.raises(DeliveryError) as caught:
        await notifier(smtp_server).send(make_notification())
    assert caught.value.transient is False
    assert "550" in caught.value.detail
    assert smtp_server.sink.messages == []


async def test_greylisting_is_a_transient_failure_and_the_retry_arrives(
    smtp_server: Any, make_notification: Any
) -> None:
    smtp_server.sink.rcpt_replies["eva.berg@family.example"] = "451 4.7.1 greylisted, try again later"
    sender = notifier(smtp_server)
    with pytest.raises(DeliveryError) as caught:
        await sender.send(make_notification())
    assert caught.value.transient is True
    assert "451" in caught.value.detail
    del smtp_server.sink.rcpt_replies["eva.berg@family.example"]
    assert (await sender.send(make_notification())).startswith("SMTP 250")
    assert len(smtp_server.sink.messages) == 1


@pytest.mark.parametrize(
    ("reply", "transient"), [("452 4.3.1 insufficient storage", True), ("554 5.6.0 refused", False)]
)
async def test_a_refused_message_body_is_classified_by_its_code(
    smtp_server: Any, make_notification: Any, reply: str, transient: bool
) -> None:
    smtp_server.sink.data_reply = reply
    with pytest.raises(DeliveryError) as caught:
        await notifier(smtp_server).send(make_notification())
    assert caught.value.transient is transient
    assert reply[:3] in caught.value.detail


async def test_a_server_that_is_not_there_is_a_transient_failure(make_notification: Any) -> None:
    sender = EmailNotifier("127.0.0.1", free_port(), "alerts@care.example", timeout_s=5)
    with pytest.raises(DeliveryError) as caught:
        await sender.send(make_notification())
    assert caught.value.transient is True


async def test_login_with_the_right_password_sends_and_a_wrong_one_is_permanent(
    smtp_server: Any, make_notification: Any
) -> None:
    good = notifier(smtp_server, username="careloop", password="s3cret-relay")
    assert (await good.send(make_notification())).startswith("SMTP 250")
    assert smtp_server.sink.messages[0].authenticated_as == "careloop"

    bad = notifier(smtp_server, username="careloop", password="wrong")
    with pytest.raises(DeliveryError) as caught:
        await bad.send(make_notification())
    assert caught.value.transient is False
    assert "535" in caught.value.detail
    assert len(smtp_server.sink.messages) == 1


async def test_starttls_required_but_not_offered_is_permanent(smtp_server: Any, make_notification: Any) -> None:
    with pytest.raises(DeliveryError) as caught:
        await notifier(smtp_server, starttls=True).send(make_notification())
    assert caught.value.transient is False
    assert smtp_server.sink.messages == []


@pytest.mark.parametrize("address", [None, "", "not an address"])
async def test_a_recipient_without_a_usable_address_is_permanent(
    smtp_server: Any, make_notification: Any, address: str | None
) -> None:
    recipient = Recipient("family-8", RecipientKind.FAMILY, "Olof Berg", email=address)
    with pytest.raises(DeliveryError) as caught:
        await notifier(smtp_server).send(make_notification(recipient=recipient))
    assert caught.value.transient is False
    assert smtp_server.sink.messages == []


def test_message_ids_are_valid_for_any_notification_id() -> None:
    assert message_id_for("ntf-1", "alerts@care.example") == "<careloop.ntf-1@care.example>"
    odd = message_id_for("ntf 1/<x>", "alerts@care.example")
    assert odd == message_id_for("ntf 1/<x>", "alerts@care.example")
    assert odd.startswith("<careloop.")
    assert " " not in odd
    assert "<x>" not in odd
    assert message_id_for("n1", "no-domain").endswith("@careloop.invalid>")
