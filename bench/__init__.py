"""The benchmarks, each a module run with `python -m bench.<name>` from the repository root
(`python -m bench.run_all` runs the suite into BENCHMARKS.md)."""
