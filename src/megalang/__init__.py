"""megalang: train large language models end to end, from raw text to an evaluated, exported model."""

__version__ = "0.1.0"
