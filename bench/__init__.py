"""Relink's benchmarks: `python -m bench [--large] [--only NAME]` (never part of `make test`).

Each benchmark prints one line per figure, writes `bench/results/<name>.json` and the
run regenerates `docs/benchmarks.md`. Timings are compared as ratios within one run.
"""
