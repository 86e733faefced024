"""Evaluation: the metrics and suites that score fine-tuned models like a paper does."""
