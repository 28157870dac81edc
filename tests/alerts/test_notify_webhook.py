"""alerts/notify/webhook.py against a real HTTP server: signed bodies, idempotency keys, and how each answer is told."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from email.utils import formatdate
from typing import Any

import httpx
import pytest

from alerts.models import DeliveryError
from alerts.notify.webhook import WebhookNotifier, body_for, retry_after_s, sign, verify_signature
from careloop.ports import free_port

SECRET = b"test-webhook-secret"  # the receiver fixture's WEBHOOK_SECRET
NOW = 1_790_000_600.0


# -- against a real receiver ----------------------------------------------------------------------------------------
async def test_a_signed_post_reaches_the_gateway_with_every_field(
    webhook_receiver: Any, make_notification: Any
) -> None:
    notifier = WebhookNotifier(webhook_receiver.url, SECRET, timeout_s=5)
    try:
        receipt = await notifier.send(make_notification())
    finally:
        await notifier.aclose()

    assert receipt == "HTTP 200"
    (request,) = webhook_receiver.requests
    assert request.method == "POST"
    assert request.path == "/hooks/careloop"
    assert request.signature_ok
    assert request.headers["content-type"] == "application/json"
    assert request.headers["idempotency-key"] == "ntf-000042"
    assert abs(int(request.headers["x-careloop-timestamp"]) - time.time()) < 60
    assert request.headers["x-careloop-signature"].startswith("sha256=")
    assert json.loads(request.body) == {
        "notification_id": "ntf-000042",
        "alert_id": "al-000123",
        "resident_id": "r-0001",
        "home_id": "h0001",
        "kind": "fall",
        "severity": "high",
        "state": "open",
        "recipient": {
            "id": "family-7",
            "name": "Eva Berg",
            "phone": "+46701234567",
            "email": "eva.berg@family.example",
        },
        "title": "Anna Berg may have fallen",
        "body": 'A fall was detected in the bathroom and Anna did not press "I\'m OK".',
        "link": "https://console.care.example/alerts/al-000123",
        "created_ts": 1_790_000_571.0,
    }


async def test_a_wrong_secret_is_refused_by_the_receiver_and_permanent(
    webhook_receiver: Any, make_notification: Any
) -> None:
    async with httpx.AsyncClient() as client:
        notifier = WebhookNotifier(webhook_receiver.url, b"another secret", timeout_s=5, client=client)
        with pytest.raises(DeliveryError) as caught:
            await notifier.send(make_notification())
        await notifier.aclose()  # a client passed in stays open for its owner
        assert not client.is_closed
    assert caught.value.transient is False
    assert "HTTP 401" in caught.value.detail
    assert [r.signature_ok for r in webhook_receiver.requests] == [False]


async def test_503_is_retried_with_its_retry_after_and_the_retry_has_the_same_key(
    webhook_receiver: Any, make_notification: Any
) -> None:
    webhook_receiver.answer(503, {"Retry-After": "7"}, b"maintenance")
    notifier = WebhookNotifier(webhook_receiver.url, SECRET, timeout_s=5)
    try:
        with pytest.raises(DeliveryError) as caught:
            await notifier.send(make_notification())
        assert caught.value.transient is True
        assert caught.value.retry_after_s == 7.0
        assert "HTTP 503 maintenance" in caught.value.detail
        assert await notifier.send(make_notification()) == "HTTP 200"
    finally:
        await notifier.aclose()
    first, second = webhook_receiver.requests
    assert first.signature_ok
    assert second.signature_ok
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"] == "ntf-000042"
    assert first.body == second.body


@pytest.mark.parametrize("status", [408, 429, 500, 502])
async def test_statuses_worth_retrying_are_transient(
    webhook_receiver: Any, make_notification: Any, status: int
) -> None:
    webhook_receiver.answer(status)
    notifier = WebhookNotifier(webhook_receiver.url, SECRET, timeout_s=5)
    try:
        with pytest.raises(DeliveryError) as caught:
            await notifier.send(make_notification())
    finally:
        await notifier.aclose()
    assert caught.value.transient is True
    assert caught.value.retry_after_s is None


@pytest.mark.parametrize("status", [400, 404, 410, 422, 302])
async def test_other_refusals_are_permanent(webhook_receiver: Any, make_notification: Any, status: int) -> None:
    webhook_receiver.answer(status, {"Location": "https://elsewhere.example/"}, b'{"error":"invalid phone number"}')
    notifier = WebhookNotifier(webhook_receiver.url, SECRET, timeout_s=5)
    try:
        with pytest.raises(DeliveryError) as caught:
            await notifier.send(make_notification())
    finally:
        await notifier.aclose()
    assert caught.value.transient is False
    assert f"HTTP {status}" in caught.value.detail
    assert len(webhook_receiver.requests) == 1  # a redirect is not followed


async def test_a_gateway_that_hangs_is_a_transient_timeout(webhook_receiver: Any, make_notification: Any) -> None:
    webhook_receiver.hang()
    notifier = WebhookNotifier(webhook_receiver.url, SECRET, timeout_s=0.5)
    try:
        with pytest.raises(DeliveryError) as caught:
            await notifier.send(make_notification())
    finally:
        await notifier.aclose()
    assert caught.value.transient is True
    assert "no answer within 0.5 s" in caught.value.detail
    assert len(webhook_receiver.requests) == 1  # it got there, and never answered


async def test_nobody_listening_is_transient(make_notification: Any) -> None:
    notifier = WebhookNotifier(f"http://127.0.0.1:{free_port()}/hook", SECRET, timeout_s=5)
    try:
        with pytest.raises(DeliveryError) as caught:
            await notifier.send(make_notification())
    finally:
        await notifier.aclose()
    assert caught.value.transient is True
    assert "ConnectError" in caught.value.detail


def test_bad_configuration_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="http"):
        WebhookNotifier("ftp://gateway.example/hook", SECRET)
    with pytest.raises(ValueError, match="secret"):
        WebhookNotifier("https://gateway.example/hook", b"")


# -- the signature scheme -------------------------------------------------------------------------------------------
def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"a":1}'
    expected = hmac.new(SECRET, b"1790000600." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, "1790000600", body) == f"sha256={expected}"


def test_verify_accepts_a_fresh_signature_and_refuses_every_tampering() -> None:
    body = b'{"notification_id":"ntf-1","title":"Fall: Anna Berg"}'
    ts = str(int(NOW))
    good = sign(SECRET, ts, body)
    assert verify_signature(SECRET, ts, body, good, now=NOW)
    assert verify_signature(SECRET, ts, body, good, now=NOW + 300)
    assert not verify_signature(SECRET, ts, body + b" ", good, now=NOW)  # body changed
    assert not verify_signature(b"other", ts, body, good, now=NOW)  # another secret
    assert not verify_signature(SECRET, str(int(NOW) + 1), body, good, now=NOW)  # timestamp changed
    assert not verify_signature(SECRET, ts, body, good, now=NOW + 301)  # replayed too late
    assert not verify_signature(SECRET, ts, body, good, now=NOW - 301)  # from the future
    assert not verify_signature(SECRET, ts, body, good.replace("sha256=", "sha1="), now=NOW)
    assert not verify_signature(SECRET, ts, body, good.upper(), now=NOW)
    assert not verify_signature(SECRET, "", body, good, now=NOW)
    assert not verify_signature(SECRET, "1e9", body, sign(SECRET, "1e9", body), now=1e9)
    assert not verify_signature(SECRET, "9" * 5000, body, good, now=NOW)
    assert not verify_signature(SECRET, ts, body, "sha256=ü", now=NOW)
    assert verify_signature(SECRET, ts, body, good, now=NOW + 30, tolerance_s=60)
    assert not verify_signature(SECRET, ts, body, good, now=NOW + 90, tolerance_s=60)


def test_the_body_is_compact_utf8_json(make_notification: Any) -> None:
    body = body_for(make_notification(title="Fall: Åsa Öberg"))
    assert "Åsa Öberg".encode() in body
    assert b", " not in body
    assert json.loads(body)["title"] == "Fall: Åsa Öberg"


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    assert retry_after_s("120", now=NOW) == 120.0
    assert retry_after_s(formatdate(NOW + 90, usegmt=True), now=NOW) == 90.0
    assert retry_after_s(formatdate(NOW - 90, usegmt=True), now=NOW) == 0.0
    assert retry_after_s(None, now=NOW) is None
    assert retry_after_s("soon", now=NOW) is None
    assert retry_after_s("-5", now=NOW) is None
