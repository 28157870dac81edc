"""The e-mail channel: one multipart (plain text + HTML) message per notification, over SMTP with aiosmtplib.

aiosmtplib because the send stays on the event loop (no thread per message), it does STARTTLS and AUTH, and it
is well kept. ``send`` returns once the server accepted the message (250 after DATA); it does not know whether
the mailbox owner read it.

Outcomes, by what the server said:

- accepted: the receipt is "SMTP 250 <server's reply>";
- 4xx replies (greylisting, mailbox busy, 421 service closing), a refused or lost connection, a timeout:
  ``DeliveryError(transient=True)``, the dispatcher tries again;
- 5xx replies (550 unknown mailbox, 535 bad credentials, 554 refused), STARTTLS or AUTH asked for but not
  offered, a recipient without a usable address: ``DeliveryError(transient=False)``, shown to staff.

The Message-ID is derived from the notification id, so a retried notification is recognisably the same e-mail
(and a mail system that de-duplicates on Message-ID keeps one); ``X-Careloop-Alert`` and
``X-Careloop-Notification`` carry the ids for filters, ``Auto-Submitted`` keeps auto-responders from replying.
"""

from __future__ import annotations

import hashlib
import re
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, parseaddr

import aiosmtplib

from alerts.models import ChannelName, DeliveryError, Notification
from alerts.notify.render import one_line, render

_ID_LEFT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def message_id_for(notification_id: str, sender: str) -> str:
    """The Message-ID of a notification's e-mail: <careloop.ID@DOMAIN>, ID hashed when it has other characters."""
    if _ID_LEFT.fullmatch(notification_id):
        left = notification_id
    else:
        left = hashlib.sha256(notification_id.encode()).hexdigest()
    _, at, domain = parseaddr(sender)[1].rpartition("@")
    if not at or not domain:
        domain = "careloop.invalid"
    return f"<careloop.{left}@{domain}>"


def _is_transient_code(code: int) -> bool:
    return 400 <= code < 500


class EmailNotifier:
    """Sends notifications as e-mail through one SMTP server (a relay or the organisation's mail server)."""

    channel = ChannelName.EMAIL

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout_s: float = 10,
        console_url: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.username = username
        self.password = password
        self.starttls = starttls
        self.timeout_s = timeout_s  # per SMTP command (connect, each reply), as aiosmtplib applies it
        self.console_url = console_url  # the link shown when a notification has none of its own

    def message_for(self, notification: Notification) -> EmailMessage:
        """The e-mail of a notification; DeliveryError(transient=False) when the recipient has no usable address."""
        recipient = notification.recipient
        if not recipient.email:
            raise DeliveryError(f"recipient {recipient.recipient_id} has no e-mail address", transient=False)
        rendered = render(notification, console_url=self.console_url)
        message = EmailMessage()
        try:
            message["From"] = self.sender
            message["To"] = Address(display_name=one_line(recipient.name), addr_spec=recipient.email)
        except (ValueError, IndexError) as exc:  # email's header parser raises IndexError on some garbage
            raise DeliveryError(f"e-mail address not usable: {exc}", transient=False) from None
        message["Subject"] = rendered.subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = message_id_for(notification.notification_id, self.sender)
        message["X-Careloop-Alert"] = one_line(notification.alert_id)
        message["X-Careloop-Notification"] = one_line(notification.notification_id)
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(rendered.text)
        message.add_alternative(rendered.html, subtype="html")
        return message

    async def send(self, notification: Notification) -> str:
        """Send the e-mail and return the server's acceptance; raise DeliveryError saying whether to retry."""
        message = self.message_for(notification)
        try:
            _, reply = await aiosmtplib.send(
                message,
                hostname=self.host,
                port=self.port,
                username=self.username,
                password=self.password,
                start_tls=self.starttls,
                timeout=self.timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [refused.code for refused in exc.recipients]
            detail = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
            raise DeliveryError(
                f"recipient refused: {detail}", transient=any(_is_transient_code(c) for c in codes)
            ) from None
        except aiosmtplib.SMTPResponseException as exc:  # sender refused, DATA refused, AUTH failed, greeting refused
            raise DeliveryError(f"SMTP {exc.code} {exc.message}", transient=_is_transient_code(exc.code)) from None
        except (OSError, TimeoutError) as exc:  # refused, lost, timed out (aiosmtplib's connection errors included)
            raise DeliveryError(
                f"SMTP server {self.host}:{self.port}: {type(exc).__name__}: {exc}", transient=True
            ) from None
        except aiosmtplib.SMTPException as exc:  # STARTTLS or AUTH not offered, SMTPUTF8 needed: a setting to fix
            raise DeliveryError(f"SMTP server {self.host}:{self.port}: {exc}", transient=False) from None
        return f"SMTP 250 {one_line(reply)}"[:200]
