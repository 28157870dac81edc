"""The InfluxDB adapter: line protocol and an async client for the v1-compatible HTTP API."""
