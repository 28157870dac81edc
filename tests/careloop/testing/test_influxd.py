"""The influxd launcher and fixtures: own ports, data kept across stop/kill and start, install hint."""

from __future__ import annotations

import urllib.request

import pytest

from careloop.testing.influxd import INSTALL_HINT, Influxd
from careloop.testing.service_fixtures import InfluxTestDatabase, _launch
from careloop.testing.service_process import ServiceNotInstalled


def write(server: Influxd, db: str, body: bytes) -> int:
    request = urllib.request.Request(f"{server.url}/write?db={db}&precision=ns", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def values(server: Influxd, db: str, influxql: str) -> list[list[object]]:
    [result] = server.query(influxql, db=db)["results"]
    return [row for series in result.get("series", []) for row in series["values"]]


def test_acknowledged_writes_survive_a_kill_and_a_restart_on_the_same_ports(fresh_influxd: Influxd) -> None:
    url, rpc_port = fresh_influxd.url, fresh_influxd.rpc_port
    assert {fresh_influxd.http_port, rpc_port}.isdisjoint({8086, 8088})
    fresh_influxd.create_database("keep")
    assert write(fresh_influxd, "keep", b"m f=1.5 1\nm f=2.5 2") == 204
    fresh_influxd.kill()  # the WAL is fsynced per write, so an acknowledged write is on disk
    fresh_influxd.start()
    assert write(fresh_influxd, "keep", b"m f=3.5 3") == 204
    fresh_influxd.restart()
    assert (fresh_influxd.url, fresh_influxd.rpc_port) == (url, rpc_port)
    assert [row[1] for row in values(fresh_influxd, "keep", "SELECT f FROM m")] == [1.5, 2.5, 3.5]


def test_influx_db_fixture_gives_a_fresh_database(influxd: Influxd, influx_db: InfluxTestDatabase) -> None:
    assert influx_db.url == influxd.url
    assert [influx_db.name] in values(influxd, influx_db.name, "SHOW DATABASES")
    assert values(influxd, influx_db.name, "SHOW MEASUREMENTS") == []
    assert influx_db.settings().database == influx_db.name


def test_auth_enabled_server_has_its_admin() -> None:
    with Influxd(admin=("admin", "it's \\ secret")) as server:
        [result] = server.query("SHOW USERS")["results"]
        assert result["series"][0]["values"] == [["admin", True]]
        assert "auth-enabled = true" in server.config_path.read_text()


def test_missing_binary_gives_the_install_hint() -> None:
    with pytest.raises(ServiceNotInstalled) as caught:
        Influxd(binary="/nonexistent/influxd")
    assert str(caught.value) == INSTALL_HINT
    with pytest.raises(pytest.fail.Exception, match="apt-get install influxdb"):
        next(_launch(lambda: Influxd(binary="/nonexistent/influxd")))
