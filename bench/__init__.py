"""Benchmarks: the gateway against stock Anki sync servers reached directly (issue 5).

One command runs every measure side by side on this machine and writes the figures as JSON,
a Markdown report and plots: `python -m bench` (full, for docs/benchmarks.md) or
`python -m bench --quick` (seconds, tiny sizes; CI runs it through tests/test_bench_quick.py).
"""
