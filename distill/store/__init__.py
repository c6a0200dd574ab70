"""Where a run keeps what it computes: storage (a local folder or a bucket), the output folder, atomic
artifacts, the results contract (records) and the work counters. Imports nothing above errors."""
