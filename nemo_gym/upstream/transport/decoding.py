"""Content-encoded answer bodies, decoded within a size limit.

We never ask for compression on the lean path; a proxy in between may add it anyway, and the
aiohttp path asks for gzip and deflate itself (its own decompression is off, so the decoded size
is bounded here too): a small compressed answer must not expand into gigabytes.
"""

from __future__ import annotations

import zlib

from nemo_gym.exceptions import ProtocolError, ResponseTooLarge

_GZIP = 16 + zlib.MAX_WBITS


def decode_body(body: bytes, encoding: bytes, limit: int) -> bytes:
    """`body` as sent with `content-encoding: encoding` (lower-case), decoded; raises
    ResponseTooLarge past `limit` bytes, ProtocolError for a broken or unknown encoding."""
    if encoding == b"identity":
        return body
    try:
        if encoding in (b"gzip", b"x-gzip"):
            return _inflate(body, _GZIP, limit)
        if encoding == b"deflate":
            try:
                return _inflate(body, zlib.MAX_WBITS, limit)
            except zlib.error:  # raw deflate, without the zlib wrapper some servers leave out
                return _inflate(body, -zlib.MAX_WBITS, limit)
    except zlib.error as exc:
        raise ProtocolError(f"cannot decode {encoding.decode('latin-1')} body: {exc}") from None
    raise ProtocolError(f"unsupported content-encoding {encoding.decode('latin-1')!r}")


def _inflate(body: bytes, wbits: int, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    out = inflater.decompress(body, limit + 1)
    if len(out) > limit or inflater.unconsumed_tail:
        raise ResponseTooLarge(f"decompressed response body is larger than max_decompressed_bytes ({limit})")
    return out
