"""Selectors that read target-model embeddings."""
