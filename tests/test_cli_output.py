"""The lines the CLI prints for people, from the answers a daemon gives, without a daemon."""

from __future__ import annotations

import pytest

from meshnode.client import cli
from meshnode.client.words import size


def test_status_names_the_interfaces_discovery_skips_and_why() -> None:
    discovery = {
        "mdns": True,
        "interfaces": ["eth0"],
        "skipped_interfaces": {"lo": "loopback", "docker0": "a container bridge"},
        "services": 1,
        "ignored_services": {"another network": 2},
    }
    assert cli._discovery_line(discovery) == (
        "mDNS on eth0, not on lo (loopback), docker0 (a container bridge);"
        " 1 service of this network seen; ignored: another network 2"
    )


def test_a_record_line_has_three_cells_whatever_its_value_holds() -> None:
    record = {"key": "notes/x", "author": "node1abc", "deleted": False}
    for value, shown in [
        ("plain words", "plain words"),
        ("a note\n", '"a note\\n"'),
        ("left\tright", '"left\\tright"'),
        ("\x85", '"\\u0085"'),
        ('"a\\tb"', '"\\"a\\\\tb\\""'),  # a string that would read as a quoted one
        ('{"cpu": 0.4}', '{"cpu": 0.4}'),  # text, shown as it is: --json tells them apart
        ({"cpu": 0.4}, '{"cpu": 0.4}'),
    ]:
        assert cli._line({**record, "value": value}) == f"notes/x\t{shown}\tnode1abc"


def test_sizes_are_shown_in_the_units_people_read() -> None:
    assert [size(n) for n in (570, 1536, (1 << 20) - 1, 268435456, 5 << 30)] == [
        "570 B",
        "1.5 KiB",
        "1 MiB",
        "256 MiB",
        "5 GiB",
    ]


def test_a_run_interrupted_before_it_runs_says_so_and_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(args: object) -> int:
        raise KeyboardInterrupt  # ^C before the daemon listens for signals

    monkeypatch.setattr(cli, "cmd_run", interrupted)
    assert cli.main(["run", "--no-mdns"]) == 130
    assert capsys.readouterr().err == "meshnode: interrupted\n"


def test_a_node_not_yet_reconciled_with_any_peer_says_just_that() -> None:
    from meshnode.client.sync_commands import sync_line

    summary = {"peers": 1, "to_fetch": 0, "peers_reconciling": 0, "peers_synced": 0}
    assert sync_line(summary) == (
        "nothing to fetch so far; not yet reconciled with 1 peer (meshnode sync --wait)"
    )


@pytest.mark.parametrize(
    ("peers", "said"),
    [(2, "not yet reconciled with the other (meshnode"), (4, "with the other 3 peers (meshnode")],
)
def test_a_node_in_sync_with_some_peers_counts_the_others(peers: int, said: str) -> None:
    from meshnode.client.sync_commands import sync_line

    summary = {"peers": peers, "to_fetch": 0, "peers_reconciling": 0, "peers_synced": 1}
    line = sync_line(summary)
    assert line.startswith(f"nothing to fetch; in sync with 1 of {peers} peers,") and said in line
