"""The simulator (``meshnode.sim``): real engines on virtual time, and what it promises.

A seeded run of N nodes publishing R records for S virtual seconds, with or
without faults (a crash of a share of the nodes, a partition into two halves,
churn replacing a share of them), ends with four invariants judged:

- **converged**: every live node holds the same records, the expected ones;
- **verified**: every record a live node holds verifies;
- **bounded**: sessions, session outboxes and stores stayed within their limits;
- **durable**: every record a node acknowledged is still in its own store.

With faults that heal, all four hold and every record reaches every live node.
Each invariant can also be made to fail, or it would prove nothing; the same
seed gives the same run, event for event; and ``python -m meshnode.sim`` runs
one scenario from the command line, exiting 0 when the invariants held, 1 when
one did not and 2 on bad arguments.

Timing the fault scenarios rely on (virtual seconds): a crash comes at a fifth
of the run and lasts ``CRASH_DOWNTIME`` (10 s); a partition starts at a quarter
of the run; a session hears nothing for 10 s before it ends (idle timeout),
redials back off to 60 s and sessions reconcile every 60 s. So a run is long
enough to converge if it goes on for a redial and a reconcile after the last
fault ends.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from msgspec import structs

from meshnode.core.identity import Identity
from meshnode.core.record import decode_record, sign_record
from meshnode.engine.mesh import Mesh
from meshnode.engine.settings import PeerSettings, SettingsError
from meshnode.sim.network import T0_MS
from meshnode.sim.scenario import CRASH_DOWNTIME, Report, Run, Scenario, run

ROOT = Path(__file__).resolve().parents[1]
INVARIANTS = ("converged", "verified", "bounded", "durable")

# Small, seeded scenarios, one for each kind of fault and one with all of them.
FAULTS = {
    "no faults": Scenario(nodes=12, records=20, seconds=30, seed=1),
    "crash": Scenario(nodes=12, records=20, seconds=60, seed=2, crash=0.25),
    # Shorter than the idle timeout: sessions across the split survive it, and
    # what it held back is delivered when it heals.
    "short partition": Scenario(nodes=12, records=20, seconds=120, seed=3, partition=5),
    # Longer than the idle timeout: sessions across the split end, dials into
    # it fail and back off; after it heals, redials and reconciliation catch up.
    "long partition": Scenario(nodes=12, records=20, seconds=180, seed=4, partition=60),
    "churn": Scenario(nodes=12, records=20, seconds=60, seed=5, churn=0.25),
    "all at once": Scenario(
        nodes=16, records=20, seconds=180, seed=6, crash=0.2, partition=30, churn=0.25
    ),
}


# -- helpers ---------------------------------------------------------------------------


def held(run_: Run, index: int) -> set[bytes]:
    """The ids of the records node ``index`` holds now."""
    now_ms = run_.net.instant().wall_ms
    return {rid for _, rid in run_.net.nodes[index].store.items(now_ms)}


def all_hold_the_same(run_: Run) -> bool:
    return len({frozenset(held(run_, n.index)) for n in run_.net.live()}) <= 1


def run_with(
    scenario: Scenario, at: dict[float, Callable[[Run], None]] | None = None
) -> tuple[Run, Report]:
    """Run ``scenario``, calling each ``at[t](run)`` at virtual time ``t``; then judge it."""
    run_ = Run(scenario)
    run_.build()
    for when, fn in (at or {}).items():
        run_.net.call_at(when, functools.partial(fn, run_))
    run_.net.run_until(scenario.seconds)
    return run_, run_._judge(0.0)


def finish(scenario: Scenario) -> Run:
    """Build and run ``scenario`` to its end, not judged yet (to tamper with first)."""
    run_ = Run(scenario)
    run_.build()
    run_.net.run_until(scenario.seconds)
    return run_


def figures(report: Report) -> dict[str, Any]:
    """Everything a report says, but the wall time it took."""
    found = report.as_json()
    del found["wall_s"]
    return found


# -- with faults that heal, every invariant holds ----------------------------------------


@pytest.mark.parametrize("scenario", FAULTS.values(), ids=FAULTS.keys())
def test_seeded_runs_hold_every_invariant_and_deliver_everything(scenario: Scenario) -> None:
    report = run(scenario)
    assert report.invariants == dict.fromkeys(INVARIANTS, True), report.as_json()
    assert report.converged
    assert report.delivered_fraction == 1.0
    assert report.converge_ms is not None and report.converge_ms >= 0
    assert report.live_nodes == scenario.nodes  # crashed nodes restarted, left ones replaced


def test_a_crash_takes_nodes_down_and_they_catch_up_after_restarting() -> None:
    scenario = FAULTS["crash"]
    victims = round(scenario.crash * scenario.nodes)
    during = scenario.seconds / 5 + CRASH_DOWNTIME - 0.5
    seen: dict[str, Any] = {}

    def look(run_: Run) -> None:
        down = [n.index for n in run_.net.nodes if not n.up]
        up = run_.net.live()[0].index
        seen["down"] = len(down)
        # What was published meanwhile is not in the stores the crashed nodes kept.
        seen["behind"] = all(held(run_, up) - held(run_, i) for i in down)

    _, report = run_with(scenario, {during: look})
    assert seen == {"down": victims, "behind": True}
    assert report.converged and report.delivered_fraction == 1.0


def sessions_across(run_: Run) -> int:
    """Sessions not yet closed between nodes on the two sides of the partition now."""
    side = run_.net._side
    assert side is not None, "not partitioned"
    by_key = {n.identity.public_key: n.index for n in run_.net.nodes}
    across = [
        p
        for n in run_.net.live()
        for p in n.mesh.peers()  # type: ignore[union-attr]
        if p.state != "closed" and side[n.index] != side[by_key[p.node]]
    ]
    return len(across)


@pytest.mark.parametrize(
    ("name", "sessions_survive"), [("short partition", True), ("long partition", False)]
)
def test_a_partition_splits_what_nodes_hold_until_it_heals(
    name: str, sessions_survive: bool
) -> None:
    """Sessions across a split outlive it if it is shorter than their idle timeout."""
    scenario = FAULTS[name]
    seen: dict[str, Any] = {}

    def look(run_: Run) -> None:
        seen["same"] = all_hold_the_same(run_)
        seen["across"] = sessions_across(run_)

    healed = scenario.seconds / 4 + scenario.partition
    _, report = run_with(scenario, {healed - 0.5: look})
    assert not seen["same"]
    assert (seen["across"] > 0) == sessions_survive
    assert report.converged and report.delivered_fraction == 1.0


def test_churn_replaces_nodes_and_the_newcomers_catch_up() -> None:
    scenario = FAULTS["churn"]
    run_, report = run_with(scenario)
    replaced = round(scenario.churn * scenario.nodes)
    assert replaced > 0
    assert len(run_.net.nodes) == scenario.nodes + replaced
    assert sum(n.gone for n in run_.net.nodes) == replaced
    newcomers = run_.net.nodes[scenario.nodes :]
    assert all(n.up for n in newcomers)
    assert all(held(run_, n.index) == held(run_, newcomers[0].index) for n in newcomers)
    assert report.converged and report.delivered_fraction == 1.0


def test_dropped_sessions_are_redialled_and_nothing_is_missed() -> None:
    scenario = Scenario(nodes=12, records=20, seconds=60.0, seed=2, drops=30)
    lost: list[int] = []
    run_ = Run(scenario)
    original = run_.net.drop

    def counting_drop(index: int) -> bool:
        dropped = original(index)
        lost.append(dropped)
        return dropped

    run_.net.drop = counting_drop  # type: ignore[method-assign]
    report = run_.run()
    assert len(lost) == 30 and sum(lost) >= 25  # most draws found a session to reset
    assert report.converged and report.delivered_fraction == 1.0


# -- each invariant can fail -------------------------------------------------------------

SMALL = Scenario(nodes=8, records=16, seconds=30, seed=7)


def test_a_partition_that_never_heals_fails_converged() -> None:
    side = set(range(SMALL.nodes // 2))
    _, report = run_with(SMALL, {0.5: lambda r: r.net.partition(side)})
    assert report.invariants == {
        "converged": False,
        "verified": True,
        "bounded": True,
        "durable": True,
    }
    assert not report.converged
    assert report.delivered_fraction < 1.0
    assert report.converge_ms is None


def test_a_graph_in_parts_fails_converged() -> None:
    report = run(structs.replace(SMALL, degree=1))  # pairs of nodes, nothing between them
    assert report.components > 1
    assert not report.invariants["converged"]
    assert report.delivered_fraction < 1.0


def forged_record() -> Any:
    """A record whose signature does not verify, decoded without checking it."""
    good = sign_record(Identity(b"\x01" * 32), seq=1, key="sim/forged", value="x", created_ms=T0_MS)
    raw = good.raw[:-1] + bytes([good.raw[-1] ^ 1])  # the last byte of the signature
    return decode_record(raw, verify=False)


def test_a_record_that_does_not_verify_fails_verified() -> None:
    run_ = finish(SMALL)
    assert run_._judge(0.0).invariants["verified"]
    node = run_.net.live()[0]
    # The store takes what it is given as verified (the engine verifies first).
    node.store.ingest([forged_record()], run_.net.instant().wall_ms)
    report = run_._judge(0.0)
    assert not report.invariants["verified"]
    assert report.invariants["durable"] and report.invariants["bounded"]
    assert not report.converged


def test_a_store_past_its_byte_limit_fails_bounded() -> None:
    # Every ingest keeps a store under its limit, so no run goes past it by
    # itself; lowering the limit under a store that is already full (as a
    # restart with a smaller limit would) is how to show the sampled check reads it.
    def shrink(run_: Run) -> None:
        store = run_.net.nodes[0].store
        assert store.total_bytes > 0
        store.limits = structs.replace(store.limits, max_total_bytes=store.total_bytes // 2)

    _, report = run_with(SMALL, {SMALL.seconds - 0.5: shrink})
    assert report.invariants == {
        "converged": True,
        "verified": True,
        "bounded": False,
        "durable": True,
    }


def test_more_sessions_than_max_peers_fails_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    # The policy keeps every node within ``max_peers`` (and settings that could not
    # fit their static peers are refused), so only an engine that reports more
    # sessions than it may hold can show that the sampled check catches one.
    sessions = Mesh.peers
    monkeypatch.setattr(Mesh, "peers", lambda self: sessions(self) * 100)
    report = run(SMALL)
    assert not report.invariants["bounded"]
    assert not report.converged


def test_settings_that_leave_no_room_for_static_peers_are_refused() -> None:
    with pytest.raises(SettingsError, match="no room under max_peers"):
        PeerSettings(max_peers=2, outbound_slots=1, peers=(("192.0.2.1", 1), ("192.0.2.2", 1)))


def test_an_acknowledged_record_lost_from_its_authors_store_fails_durable() -> None:
    run_ = finish(SMALL)
    assert run_._judge(0.0).invariants["durable"]
    author, records = next(
        (i, rs) for i, rs in run_.acked.items() if rs and not run_.net.nodes[i].gone
    )
    record = records[-1]
    # No store operation forgets a live record of its owner's; reach past them,
    # as a lost write would.
    run_.net.nodes[author].store._remove(record.author, record.key)
    report = run_._judge(0.0)
    assert not report.invariants["durable"]
    assert report.invariants["verified"] and report.invariants["bounded"]
    assert not report.converged


# -- determinism -------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_run_event_for_event() -> None:
    scenario = FAULTS["all at once"]
    first, second = run(scenario), run(scenario)
    assert first.trace_digest == second.trace_digest
    assert figures(first) == figures(second)
    assert first.events == second.events and first.wire_bytes == second.wire_bytes


def test_different_seeds_give_different_runs() -> None:
    digests = {run(structs.replace(SMALL, seed=seed)).trace_digest for seed in range(4)}
    assert len(digests) == 4


# -- the flood baseline ------------------------------------------------------------------


def test_the_flood_baseline_figures_make_sense() -> None:
    report = run(Scenario(nodes=12, records=20, seconds=30, seed=8))
    assert report.converged
    # Eager push sends every new record to every session but the one it came
    # from: each node receives it from about as many peers as it has, less one.
    assert report.copies_per_node > 1
    assert report.rmr > 0  # so redundant copies are the price of the flood
    assert report.t50_ms is not None and report.t99_ms is not None
    assert report.t100_ms is not None
    assert 0 < report.t50_ms <= report.t99_ms <= report.t100_ms
    assert report.bytes_per_record > 1  # framing, handshakes, reconciliation and copies
    assert report.wire_bytes > 0 and report.events > 0


# -- the command line --------------------------------------------------------------------

JSON_KEYS = {
    "nodes",
    "records",
    "delivered_fraction",
    "copies_per_node",
    "rmr",
    "t50_ms",
    "t99_ms",
    "t100_ms",
    "converged",
    "converge_ms",
    "wall_s",
    "trace_digest",
}
CLI_ARGS = ["--nodes", "10", "--records", "10", "--seconds", "20", "--seed", "3"]


def sim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshnode.sim", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def test_the_cli_prints_one_json_line_and_exits_0_when_the_invariants_held() -> None:
    done = sim(*CLI_ARGS, "--json")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1
    found = json.loads(lines[0])
    assert found.keys() >= JSON_KEYS
    assert (found["nodes"], found["records"]) == (10, 10)
    assert found["converged"] is True
    assert found["delivered_fraction"] == 1.0
    assert found["invariants"] == dict.fromkeys(INVARIANTS, True)
    # The same run as the library's, seed for seed.
    scenario = Scenario(nodes=10, records=10, seconds=20, seed=3)
    assert found["trace_digest"] == run(scenario).trace_digest


def test_the_cli_prints_a_table_without_json() -> None:
    done = sim(*CLI_ARGS)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    rows = dict(line.split(None, 1) for line in lines if " " in line and not line.startswith(" "))
    start = lines.index("invariants")
    nested = [line.split() for line in lines[start + 1 :]]
    invariants = nested[
        : next(i for i, row in enumerate(nested) if len(row) != 2 or row[1] != "held")
    ]
    assert "overlay" in lines and any(line.startswith("  diameter") for line in lines)
    assert invariants == [
        [name, "held"] for name in ("converged", "verified", "bounded", "durable")
    ]
    assert JSON_KEYS - {"t50_ms", "t99_ms", "t100_ms", "converge_ms"} <= rows.keys()
    assert rows["converged"].strip() == "True"
    assert rows["nodes"].strip() == "10"


def test_more_neighbours_than_other_nodes_links_every_pair_and_says_so() -> None:
    assert Scenario(nodes=3, records=1, seconds=5.0).degree == 2
    done = sim("--nodes", "10", "--records", "5", "--seconds", "10", "--degree", "40", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["degree"] == 9


def test_a_crash_that_would_outlast_the_run_is_refused() -> None:
    done = sim("--nodes", "10", "--records", "5", "--seconds", "10", "--crash", "0.5")
    assert done.returncode == 2
    assert "a crash at a fifth of the run, 10 s long, needs a run longer than 12.5 s" in done.stderr


def test_the_cli_exits_1_when_an_invariant_failed() -> None:
    done = sim("--nodes", "12", "--records", "8", "--seconds", "10", "--degree", "1", "--json")
    assert done.returncode == 1, done.stderr
    found = json.loads(done.stdout)
    assert found["converged"] is False
    assert found["invariants"]["converged"] is False


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--nodes", "0", "must be at least 1"),
        ("--crash", "2", "is a share of the nodes, 0 to 1"),
        ("--seconds", "x", "'x' is not a number"),
        ("--seconds", "0", "must be more than 0"),
        ("--partition", "-1", "must be a finite number, 0 or more"),
        ("--records", "1.5", "'1.5' is not a whole number"),
        ("--degree", "0", "degree must be at least 1"),
        ("--partition", "20", "a partition at a quarter of the run, 20 s long, needs a run longer"),
    ],
)
def test_the_cli_exits_2_on_bad_arguments_saying_which(flag: str, value: str, message: str) -> None:
    args = dict(zip(CLI_ARGS[::2], CLI_ARGS[1::2], strict=True))
    args[flag] = value
    done = sim(*(part for pair in args.items() for part in pair))
    assert done.returncode == 2
    assert done.stdout == ""
    assert flag in done.stderr
    assert message in done.stderr
