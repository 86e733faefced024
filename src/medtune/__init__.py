"""medtune: fine-tune healthcare foundation models on local real-world imaging data."""

__version__ = "0.1.0"
