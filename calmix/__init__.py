"""calmix: post-training pruning of LLMs with capability-aware calibration data."""

__version__ = "0.1.0"
