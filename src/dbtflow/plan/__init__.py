"""Task plans: how each pattern turns a dbt graph and a selection into tasks."""
