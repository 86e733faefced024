"""Training: one loop for pretraining and fine-tuning, its data path, objectives and checkpoints.

Modules import what they need from each other directly (``medtune.train.data``,
``medtune.train.augment``, ...); this package imports nothing at start, so that the CLI stays
fast.
"""
