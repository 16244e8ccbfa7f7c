"""Integration fixtures live in tests/conftest.py (the DAG and e2e tests use them too)."""
