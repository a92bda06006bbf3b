"""The SDK version, sent in the User-Agent and the events payload."""

__version__ = "0.1.0"
