"""Shared fixtures: real services on free ports, per-test unique topic roots."""

pytest_plugins = [
    "careloop.testing.service_fixtures",
    "careloop.testing.pg_fixtures",
]
