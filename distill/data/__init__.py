"""The data stage: sources.py reads the rows where they are (embedded sample, local files, Hub); load.py maps,
validates, dedups and splits them. billsum_sample.jsonl (+ BILLSUM_PROVENANCE.md) is the embedded sample."""
