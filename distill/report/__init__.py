"""The comparison report, rebuilt from a run's stored files alone (build.py): load.py reads them, rows.py
computes one row per method with stats.py (intervals, tests against random) and planning.py (power), and
markdown.py, plots.py and table.py present the rows (text.py words them)."""
