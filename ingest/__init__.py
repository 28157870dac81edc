"""Streaming ingest: central MQTT broker -> InfluxDB, nothing lost, nothing doubled."""
