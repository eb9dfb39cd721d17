"""Evaluation: retrieval, probes, fine-tuning, localization metrics."""
