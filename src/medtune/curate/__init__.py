"""Curate: turn de-identified radiology report text into per-study finding labels."""
