"""The ONE target model, below every stage that uses it (features, probe, trials): load.py resolves and loads it,
prompt.py formats its prompts, train.py fine-tunes its LoRA adapter (a trial, and the probe), checkpoint.py
saves and restores a fine-tune so a killed one resumes."""
