"""The Python client against a real daemon: pipelined publishes keep their order."""

from __future__ import annotations

import pytest

from meshnode.client import RemoteError
from tests.helpers import Daemon

pytestmark = pytest.mark.slow


def test_publish_many_pipelines_and_keeps_request_order(daemon: Daemon) -> None:
    items = [(f"bulk/{n % 10}", n, None) for n in range(1000)] + [("bad//key", 1, None)]
    with daemon.client() as client:
        results = client.publish_many(iter(items), window=64)
        assert len(results) == len(items)
        assert isinstance(results[-1], RemoteError) and results[-1].code == "invalid-params"
        seqs = [r["seq"] for r in results[:-1] if isinstance(r, dict)]
        assert seqs == sorted(seqs) and len(set(seqs)) == 1000
        latest = {r["key"]: r["value"] for r in client.query(prefix="bulk/")["records"]}
    assert latest == {f"bulk/{k}": 990 + k for k in range(10)}  # the last of each key won


def test_publish_many_with_a_ttl_and_an_empty_list(daemon: Daemon) -> None:
    with daemon.client() as client:
        assert client.publish_many([]) == []
        [record] = client.publish_many([("offer/x", "y", 60_000)])
        assert isinstance(record, dict)
        assert record["expires_ms"] - record["created_ms"] == 60_000
