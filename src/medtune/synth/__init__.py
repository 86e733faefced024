"""The synthetic multi-site, multi-anatomy X-ray cohort (``medtune synth``)."""
