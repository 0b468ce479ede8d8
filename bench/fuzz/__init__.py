"""Fuzzing every parser and ingest path (issue 9); see bench/fuzz/run.py and docs/benchmarks.md."""
