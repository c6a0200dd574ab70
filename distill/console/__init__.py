"""What a user sees: run.py is the console of a run (stage lines, progress bar, trial table; the one handler of
the distill logger), checklist.py (with machine.py) the `distill validate` checklist."""
