"""dept: Decomposed Prompt Tuning (Shi & Lipani, ICLR 2024) for Hugging Face models."""

__version__ = "0.1.0"
