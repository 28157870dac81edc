"""Benchmark scripts (run each as `python bench/NAME.py`). A package only so that type checkers name
`bench/ingest.py` `bench.ingest`, not `ingest`, which is the component it measures."""
