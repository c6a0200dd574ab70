"""The experiment config: its schema (schema.py), how a job and its overrides become one (load.py), the checks
that need the data and the selector registry (checks.py), and what is read from the environment (env.py)."""
