"""`python -m ingest ...` is `careloop ingest ...`."""

from ingest.cli import ingest

ingest(prog_name="python -m ingest")
