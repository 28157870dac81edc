"""Settings from the environment (`CARELOOP_*`, nested with `__`) and an optional TOML file, validated at start-up.

Precedence, highest first: keyword arguments, environment variables, the TOML file, defaults. The TOML file is
`--config FILE` or `CARELOOP_CONFIG`. Load settings in `main()` with `load_settings()`, never at import time.

Example: `CARELOOP_MQTT__URL=mqtts://broker:8883 CARELOOP_INFLUX__DATABASE=careloop careloop config check`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from careloop.topics import ID_PATTERN

ENV_PREFIX = "CARELOOP_"
#: Environment variables with the prefix that are not settings fields (read by a command or the tests directly).
NON_FIELD_ENV = frozenset(
    {"CARELOOP_CONFIG", "CARELOOP_TEST_PG_URL", "CARELOOP_FALLS_DIR", "CARELOOP_EDGE_UPLINK_PASSWORD"}
)

#: Secrets nobody may use outside development and the demo.
PLACEHOLDER_SECRETS = frozenset(
    {"", "changeme", "change-me", "password", "secret", "admin", "careloop", "demo", "test", "root", "guest"}
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttSettings(_Section):
    """The MQTT broker this process talks to."""

    url: str = Field("mqtt://127.0.0.1:1883", description="mqtt://host:port or mqtts://host:port (TLS)")
    username: str | None = None
    password: SecretStr | None = None
    client_id: Annotated[str, Field(pattern=ID_PATTERN)] | None = Field(
        None, description="stable id for a persistent session; generated when empty"
    )
    topic_root: Annotated[str, Field(pattern=ID_PATTERN)] = "careloop"
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    session_expiry_s: Annotated[int, Field(ge=0, le=30 * 86_400)] = 7 * 86_400
    ca_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"scheme must be mqtt:// or mqtts://, not {parts.scheme or 'missing'!r}")
        if not parts.hostname:
            raise ValueError("no host in the URL")
        try:
            parts.port  # noqa: B018 - raises ValueError for a malformed port
        except ValueError as exc:
            raise ValueError(f"bad port: {exc}") from None
        return value

    @property
    def host(self) -> str:
        """Broker host name."""
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        """Broker port (1883, or 8883 for mqtts, when not given)."""
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        """Whether to connect with TLS."""
        return urlsplit(self.url).scheme == "mqtts"


class InfluxSettings(_Section):
    """InfluxDB, spoken to through its v1-compatible HTTP API (`/write`, `/query`)."""

    url: str = "http://127.0.0.1:8086"
    database: Annotated[str, Field(min_length=1, max_length=64)] = "careloop"
    retention_policy: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = Field(None, description="InfluxDB 2.x/3.x token, sent as 'Authorization: Token ...'")
    batch_size: Annotated[int, Field(ge=1, le=100_000)] = 5000
    max_concurrency: Annotated[int, Field(ge=1, le=64)] = 4
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    max_retries: Annotated[int, Field(ge=0, le=100)] = 8

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_auth(self) -> Self:
        if self.token is not None and (self.username or self.password):
            raise ValueError("give either a token or a username and password, not both")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self


class DatabaseSettings(_Section):
    """Relational state (registry, alerts): SQLite by default, PostgreSQL by URL."""

    url: str = Field("sqlite:///careloop.db", description="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        scheme = value.split(":", 1)[0]
        if not (scheme.startswith("sqlite") or scheme.startswith("postgresql")):
            raise ValueError("only sqlite:/// and postgresql:// URLs are supported")
        return value


class AlertsSettings(_Section):
    """The alerts service: its rule and escalation files, the web console's address, and the notification channels."""

    rules_file: Path | None = Field(None, description="TOML rule set; the packaged default when unset")
    escalation_file: Path | None = Field(None, description="TOML escalation policy; the packaged default when unset")
    console_url: str = Field("http://127.0.0.1:8000", description="the web console, for links in notifications")
    client_id: Annotated[str, Field(pattern=ID_PATTERN)] = "careloop-alerts"
    receive_maximum: Annotated[int, Field(ge=1, le=65_535)] = 2000
    smtp_host: str | None = Field(None, description="SMTP relay for e-mail; no e-mail channel when unset")
    smtp_port: Annotated[int, Field(ge=1, le=65_535)] = 25
    smtp_sender: str = "careloop@localhost"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    webhook_url: str | None = Field(None, description="SMS / messaging gateway; no webhook channel when unset")
    webhook_secret: SecretStr | None = Field(None, description="HMAC-SHA256 key the gateway verifies")

    @model_validator(mode="after")
    def _webhook_needs_secret(self) -> Self:
        if self.webhook_url is not None and self.webhook_secret is None:
            raise ValueError("webhook_url needs a webhook_secret (deliveries are signed)")
        return self


class CareloopSettings(BaseSettings):
    """Everything a careloop process can be configured with."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True, validate_default=True
    )

    environment: Literal["development", "demo", "production"] = "development"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    site_id: Annotated[str, Field(pattern=ID_PATTERN)] = Field("default", description="this deployment's name")
    mqtt: MqttSettings = MqttSettings()
    influx: InfluxSettings = InfluxSettings()
    database: DatabaseSettings = DatabaseSettings()
    alerts: AlertsSettings = AlertsSettings()

    @model_validator(mode="after")
    def _no_placeholder_secrets(self) -> Self:
        if self.environment != "production":
            return self
        problems = []
        for name, secret in (
            ("mqtt.password", self.mqtt.password),
            ("influx.password", self.influx.password),
            ("influx.token", self.influx.token),
            ("alerts.smtp_password", self.alerts.smtp_password),
            ("alerts.webhook_secret", self.alerts.webhook_secret),
        ):
            if secret is not None and secret.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
                problems.append(f"{name} is a placeholder; set a real secret")
        if self.mqtt.username is None or self.mqtt.password is None:
            problems.append("mqtt.username and mqtt.password are required in production")
        if self.influx.token is None and self.influx.password is None:
            problems.append("influx credentials (token, or username and password) are required in production")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments, then the environment, then the TOML file (if any), then defaults."""
        toml_file = settings_cls.model_config.get("toml_file")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


class SettingsError(ValueError):
    """The configuration cannot be used; `problems` lists `(where, what)` pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{where}: {what}" for where, what in problems))
        self.problems = problems


def unknown_env_vars(environ: dict[str, str] | None = None) -> list[str]:
    """`CARELOOP_*` variables that name no setting (a typo would otherwise be silently ignored)."""
    env = os.environ if environ is None else environ
    unknown = []
    for key in env:
        if not key.startswith(ENV_PREFIX) or key in NON_FIELD_ENV:
            continue
        name, _, sub = key[len(ENV_PREFIX) :].lower().partition("__")
        field = CareloopSettings.model_fields.get(name)
        section = field.annotation if field is not None else None
        if field is None or (
            sub and not (isinstance(section, type) and issubclass(section, BaseModel) and sub in section.model_fields)
        ):
            unknown.append(key)
    return sorted(unknown)


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> CareloopSettings:
    """Load and validate settings; raises SettingsError listing every problem (file, environment, values)."""
    from pydantic import ValidationError

    path = config_file or os.environ.get("CARELOOP_CONFIG") or None
    problems: list[tuple[str, str]] = []
    if path is not None and not Path(path).is_file():
        raise SettingsError([("config file", f"{path} does not exist")])
    problems.extend((key, "unknown setting (check the spelling)") for key in unknown_env_vars())

    class _FromFile(CareloopSettings):
        model_config = SettingsConfigDict(toml_file=path)

    try:
        settings: CareloopSettings = _FromFile(**overrides)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            where = ".".join(str(p) for p in error["loc"]) or "settings"
            problems.append((where, error["msg"]))
    except (ValueError, OSError) as exc:  # a TOML syntax error surfaces here
        problems.append((str(path), str(exc)))
    if problems:
        raise SettingsError(problems)
    return settings


def masked(settings: CareloopSettings) -> dict[str, Any]:
    """The effective settings as plain data, with every secret shown as '**********'."""
    return settings.model_dump(mode="json")
