"""Settings: environment and TOML, validated at start-up, secrets masked, every problem reported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from careloop.cli import cli
from careloop.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("CARELOOP_"):
            monkeypatch.delenv(key)


def test_defaults_work_for_development() -> None:
    settings = load_settings()
    assert settings.environment == "development"
    assert (settings.mqtt.host, settings.mqtt.port, settings.mqtt.tls) == ("127.0.0.1", 1883, False)
    assert settings.database.url.startswith("sqlite")


def test_environment_overrides_the_file_which_overrides_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = tmp_path / "careloop.toml"
    toml.write_text('site_id = "north"\n[mqtt]\nurl = "mqtt://file-broker:1884"\n[influx]\nbatch_size = 100\n')
    monkeypatch.setenv("CARELOOP_MQTT__URL", "mqtts://env-broker")
    settings = load_settings(toml)
    assert settings.site_id == "north"
    assert (settings.mqtt.host, settings.mqtt.port, settings.mqtt.tls) == ("env-broker", 8883, True)
    assert settings.influx.batch_size == 100
    monkeypatch.setenv("CARELOOP_CONFIG", str(toml))
    assert load_settings().site_id == "north"


def test_every_problem_is_reported_with_where_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "bad.toml"
    toml.write_text('[mqtt]\nurl = "http://broker"\nkeepalive_s = 1\n[influx]\nbatch_size = "many"\ncolour = "red"\n')
    monkeypatch.setenv("CARELOOP_MQT__URL", "mqtt://typo")
    with pytest.raises(SettingsError) as caught:
        load_settings(toml)
    where = {w for w, _ in caught.value.problems}
    assert where == {
        "CARELOOP_MQT__URL",
        "mqtt.url",
        "mqtt.keepalive_s",
        "influx.batch_size",
        "influx.colour",
    }
    assert "mqtt:// or mqtts://" in str(caught.value)


def test_missing_file_and_broken_toml_are_reported(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[mqtt\nurl=")
    with pytest.raises(SettingsError, match=r"broken\.toml"):
        load_settings(broken)


def test_production_refuses_placeholder_and_missing_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_ENVIRONMENT", "production")
    monkeypatch.setenv("CARELOOP_MQTT__USERNAME", "ingest")
    monkeypatch.setenv("CARELOOP_MQTT__PASSWORD", "changeme")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    text = str(caught.value)
    assert "mqtt.password is a placeholder" in text
    assert "influx credentials" in text
    monkeypatch.setenv("CARELOOP_MQTT__PASSWORD", "k3v9-long-random")
    monkeypatch.setenv("CARELOOP_INFLUX__TOKEN", "tok-8f2c1e")
    assert load_settings().environment == "production"


def test_demo_may_use_simple_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_ENVIRONMENT", "demo")
    monkeypatch.setenv("CARELOOP_MQTT__PASSWORD", "demo")
    monkeypatch.setenv("CARELOOP_MQTT__USERNAME", "demo")
    assert load_settings().mqtt.password is not None


def test_config_check_prints_effective_config_with_secrets_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_INFLUX__USERNAME", "writer")
    monkeypatch.setenv("CARELOOP_INFLUX__PASSWORD", "s3cr3t-value")
    result = CliRunner().invoke(cli, ["config", "check"])
    assert result.exit_code == 0, result.output
    assert "s3cr3t-value" not in result.output
    shown = json.loads(result.output)
    assert shown["influx"]["username"] == "writer"
    assert shown["influx"]["password"] == "**********"


def test_config_check_lists_errors_and_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_INFLUX__MAX_CONCURRENCY", "0")
    monkeypatch.setenv("CARELOOP_DATABASE__URL", "mysql://x")
    result = CliRunner().invoke(cli, ["config", "check"])
    assert result.exit_code == 2
    assert "influx.max_concurrency" in result.output
    assert "database.url: Value error, only sqlite:/// and postgresql:// URLs are supported" in result.output


def test_the_installed_console_script_runs() -> None:
    exe = Path(sys.executable).with_name("careloop")
    done = subprocess.run([str(exe), "config", "check"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["mqtt"]["url"]


def test_variables_read_by_commands_are_not_reported_as_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_EDGE_UPLINK_PASSWORD", "x")
    monkeypatch.setenv("CARELOOP_FALLS_DIR", "/data/falls")
    assert load_settings().environment == "development"
