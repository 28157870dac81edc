"""Credentials for the Mosquitto broker: password-file lines as `mosquitto_passwd` writes them."""

from __future__ import annotations

import base64
import hashlib
import secrets


def mosquitto_password_line(username: str, password: str, *, iterations: int = 101) -> str:
    """One password-file line as `mosquitto_passwd` writes it: PBKDF2-SHA512 with a 12-byte salt (`$7$`)."""
    if ":" in username or "\n" in username:
        raise ValueError(f"username {username!r} cannot contain ':' or a newline")
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"{username}:$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
