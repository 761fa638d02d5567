"""llmprod: from a Hugging Face checkpoint to a production endpoint."""

__version__ = "0.1.0"
