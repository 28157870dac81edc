"""The webhook channel: a signed JSON POST to an SMS or messaging gateway, which texts or messages the recipient.

The request
-----------
``POST <url>`` with ``Content-Type: application/json`` and the body::

    {"notification_id", "alert_id", "resident_id", "home_id", "kind", "severity", "state",
     "recipient": {"id", "name", "phone", "email"}, "title", "body", "link", "created_ts"}

Headers:

- ``X-Careloop-Timestamp``: the UNIX time (integer seconds) at which this attempt was signed;
- ``X-Careloop-Signature``: ``sha256=`` and the lowercase hex HMAC-SHA256, keyed with the shared secret, of the
  bytes ``<timestamp>.<body>`` (the timestamp header's digits, a dot, the exact body bytes);
- ``Idempotency-Key``: the notification id, the same on every retry, so a gateway sends one SMS, not three.

A receiver checks a request with :func:`verify_signature`: recompute the HMAC over the raw body (before parsing
the JSON), compare in constant time, and refuse timestamps more than 5 minutes from its clock, so a recorded
request cannot be replayed later. The scheme is Stripe's and GitHub's: a leaked request proves nothing about the
secret, and a body changed in transit does not verify.

Outcomes
--------
- 2xx: delivered; the receipt is "HTTP 200" (the status).
- 408, 429, 5xx, a timeout (``timeout_s`` for the whole request), a refused or lost connection:
  ``DeliveryError(transient=True)``; a ``Retry-After`` header (seconds or an HTTP date) becomes ``retry_after_s``.
- any other status (400, 401 bad signature, 404, a 3xx redirect: redirects are not followed, a POST must reach
  the configured URL): ``DeliveryError(transient=False)``, shown to staff.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from email.utils import parsedate_to_datetime

import httpx

from alerts.models import ChannelName, DeliveryError, Notification

SIGNATURE_HEADER = "X-Careloop-Signature"
TIMESTAMP_HEADER = "X-Careloop-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: How far a request's timestamp may be from the receiver's clock before verify_signature refuses it.
DEFAULT_TOLERANCE_S = 300.0
_TRANSIENT_STATUS = frozenset({408, 429})


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The signature header's value: "sha256=" + hex HMAC-SHA256 of b"<timestamp>.<body>"."""
    digest = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: bytes,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    now: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> bool:
    """Whether a received request was signed with `secret` within `tolerance_s` of `now` (constant-time compare)."""
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return False
    if abs(now - int(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body).encode("ascii"), signature.strip().encode("utf-8"))


def body_for(notification: Notification) -> bytes:
    """The JSON body of a notification's webhook (compact UTF-8, the exact bytes that are signed)."""
    recipient = notification.recipient
    document = {
        "notification_id": notification.notification_id,
        "alert_id": notification.alert_id,
        "resident_id": notification.resident_id,
        "home_id": notification.home_id,
        "kind": notification.kind,
        "severity": notification.severity.value,
        "state": notification.state.value,
        "recipient": {
            "id": recipient.recipient_id,
            "name": recipient.name,
            "phone": recipient.phone,
            "email": recipient.email,
        },
        "title": notification.title,
        "body": notification.body,
        "link": notification.link,
        "created_ts": notification.created_ts,
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def retry_after_s(value: str | None, *, now: float) -> float | None:
    """A Retry-After header as seconds from `now` (it is either seconds or an HTTP date); None when absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT
        return None
    return max(0.0, when.timestamp() - now)


class WebhookNotifier:
    """POSTs signed notifications to one gateway URL."""

    channel = ChannelName.WEBHOOK

    def __init__(
        self,
        url: str,
        secret: bytes,
        *,
        timeout_s: float = 10,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        parsed = httpx.URL(url)  # raises httpx.InvalidURL
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"webhook URL {url!r} is not an http(s) URL")
        if not secret:
            raise ValueError("webhook secret is empty: every request must be signed")
        self.url = url
        self.secret = secret
        self.timeout_s = timeout_s
        self._client = client
        self._own_client = client is None

    async def aclose(self) -> None:
        """Close the HTTP client this notifier created (a client passed in is left to its owner)."""
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False)
        return self._client

    async def send(self, notification: Notification) -> str:
        """POST the signed notification; return "HTTP <status>" on 2xx, raise DeliveryError saying whether to retry."""
        body = body_for(notification)
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self.secret, timestamp, body),
            IDEMPOTENCY_HEADER: notification.notification_id,
            "User-Agent": "careloop-webhook/1",
        }
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await self._http().post(
                    self.url, content=body, headers=headers, timeout=self.timeout_s, follow_redirects=False
                )
        except (TimeoutError, httpx.TimeoutException):
            raise DeliveryError(f"POST {self.url}: no answer within {self.timeout_s:g} s", transient=True) from None
        except httpx.TransportError as exc:  # refused, reset, lost mid-answer, garbled HTTP
            raise DeliveryError(f"POST {self.url}: {type(exc).__name__}: {exc}", transient=True) from None
        status = response.status_code
        if 200 <= status < 300:
            return f"HTTP {status}"
        detail = f"POST {self.url}: HTTP {status} {' '.join(response.text[:200].split())}".rstrip()
        if status in _TRANSIENT_STATUS or status >= 500:
            wait = retry_after_s(response.headers.get("Retry-After"), now=time.time())
            raise DeliveryError(detail, transient=True, retry_after_s=wait)
        raise DeliveryError(detail, transient=False)
