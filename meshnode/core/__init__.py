"""The sans-IO core: plain state machines and codecs.

Nothing below this package opens a socket, imports trio or sqlite3, or reads a
clock: time is passed in as ``now_ms``, keys and randomness are injected. A test
(``tests/test_layering.py``) enforces this.
"""
