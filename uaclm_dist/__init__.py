"""uaclm-dist: distributed uncertainty-aware fine-tuning (UA-CLM, arXiv 2412.02904)
and uncertainty evaluation of LLMs."""

__version__ = "0.1.0"
