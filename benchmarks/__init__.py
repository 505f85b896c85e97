"""Benchmarks and load scripts; each runs as `python benchmarks/<name>.py`, and the tests import their helpers
(`from benchmarks import load_test`)."""
