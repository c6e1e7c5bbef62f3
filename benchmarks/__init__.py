"""Benchmarks of the harness: speed and memory measured as ratios against references run alongside.

Run with `python -m benchmarks [NAME...]`; see `benchmarks/README.md`.
"""
