"""Benchmarks: each bench_*.py module has run() -> list[str] and compares against a baseline in the same run."""
