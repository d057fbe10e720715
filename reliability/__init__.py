"""The reliability suite: bad-input cases with their documented answers (`reliability.cases`),
load/soak and fault checks against the real server (`reliability.run`, which writes
RELIABILITY.md: `python -m reliability`). The tests in tests/test_reliability_*.py run the same
cases and checks."""
