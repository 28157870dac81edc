"""Start real services (Mosquitto, influxd, PostgreSQL databases) for tests and benchmarks.

The launchers here do not import pytest, so `bench/` scripts can use them; the pytest fixtures live in the
`*_fixtures.py` modules, which `tests/conftest.py` loads as plugins.
"""
