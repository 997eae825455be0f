"""Helpers for testing DAGs against a real Airflow deployment (used by dbtflow's own tests and
benchmarks, and usable for yours)."""
