"""Benchmarks of tbes; ``python benchmarks/run.py`` runs them and writes docs/performance.md."""
