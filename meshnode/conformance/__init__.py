"""A conformance suite for the peer protocol, and the vectors it shares with ``protocol/``."""
