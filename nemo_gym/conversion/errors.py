"""The conversion code's errors live in the one tree (`nemo_gym.exceptions`); named here for its callers."""

from nemo_gym.exceptions import ConversionError, UpstreamFormatError

__all__ = ["ConversionError", "UpstreamFormatError"]
