"""gateway: one continuous conversation per customer across calls, texts and web chat."""

__version__ = "0.1.0"
