"""Fixtures shared by the tests below: scripted raw upstreams on 127.0.0.1 (`server_factory`)
and a self-signed certificate (`self_signed`)."""

from tests.test_upstream_http1 import self_signed, server_factory  # noqa: F401  (fixtures, used by name)
