"""Errors raised by the pure conversion code; the server maps them to HTTP statuses."""

from __future__ import annotations


class ConversionError(ValueError):
    """The caller sent something we cannot convert: a 400 naming the offending field."""

    status = 400

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class UpstreamFormatError(ValueError):
    """The upstream answered with something we cannot use: a 502 (their fault, not the caller's)."""

    status = 502

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
