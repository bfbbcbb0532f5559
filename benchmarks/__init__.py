"""Benchmarks of splitrl: each ``bench_*`` module is runnable with ``python -m benchmarks.NAME``."""
