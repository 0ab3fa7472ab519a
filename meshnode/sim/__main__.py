"""``python -m meshnode.sim``: run one simulated mesh and say how it went.

    python -m meshnode.sim --nodes 1000 --records 200 --seconds 60 --seed 1
    python -m meshnode.sim --nodes 100 --records 100 --seconds 180 \\
        --crash 0.1 --partition 30 --churn 0.2 --json

Exits 0 when every invariant held, 1 when one did not, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys

from meshnode.sim.scenario import Report, Scenario, ScenarioError, run


def parse(argv: list[str] | None) -> tuple[Scenario, bool]:
    parser = argparse.ArgumentParser(
        prog="python -m meshnode.sim",
        description="Run N real meshnode engines on virtual time and check the invariants.",
        epilog=(
            "Records are published in the first third of the run; a crash comes at a fifth"
            " of it, for 10 s; a partition at a quarter; churn and drops from a tenth to"
            " two fifths."
            " Exit status: 0 every invariant held, 1 one did not, 2 bad arguments."
        ),
    )
    parser.add_argument("--nodes", type=_positive_int, required=True, help="nodes at the start")
    parser.add_argument("--records", type=_count, required=True, help="records to publish")
    parser.add_argument("--seconds", type=_positive_float, required=True, help="virtual seconds")
    parser.add_argument("--seed", type=_integer, default=0, help="the one seed of the run (0)")
    parser.add_argument(
        "--degree",
        type=_count,
        default=5,
        help="random neighbours per node, each link dialled by one end (5)",
    )
    parser.add_argument("--crash", type=_share, default=0.0, help="share of nodes crashed at once")
    parser.add_argument(
        "--partition", type=_seconds, default=0.0, help="seconds the network is split in two"
    )
    parser.add_argument("--churn", type=_share, default=0.0, help="share of nodes replaced")
    parser.add_argument(
        "--drops", type=_count, default=0, help="sessions the network resets over the run (0)"
    )
    parser.add_argument(
        "--room",
        action="store_true",
        help="no static peers: every node hears of every other, as by mDNS at an event",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    try:
        scenario = Scenario(
            nodes=args.nodes,
            records=args.records,
            seconds=args.seconds,
            seed=args.seed,
            degree=args.degree,
            crash=args.crash,
            partition=args.partition,
            churn=args.churn,
            drops=args.drops,
            room=args.room,
        )
    except ScenarioError as exc:
        parser.error(str(exc))
    return scenario, args.json


def table(report: Report) -> str:
    """The figures one per line, each invariant on its own; "-" where there is no figure."""
    rows: list[tuple[str, str]] = []
    for key, value in report.as_json().items():
        if key == "invariants":
            rows.append((key, ""))
            rows.extend((f"  {name}", "held" if ok else "FAILED") for name, ok in value.items())
        elif isinstance(value, dict):
            rows.append((key, ""))
            rows.extend((f"  {name}", _shown(part)) for name, part in value.items())
        else:
            rows.append((key, "-" if value is None else str(value)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}".rstrip() for k, v in rows)


def _shown(value: object) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}:{v}" for k, v in value.items())
    return "-" if value is None else str(value)


def main(argv: list[str] | None = None) -> int:
    scenario, as_json = parse(argv)
    report = run(scenario)
    print(json.dumps(report.as_json()) if as_json else table(report))  # noqa: T201
    return 0 if report.converged else 1


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _positive_int(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _count(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _positive_float(text: str) -> float:
    value = _seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError("must be a finite number, 0 or more")
    return value


def _share(text: str) -> float:
    value = _seconds(text)
    if value > 1:
        raise argparse.ArgumentTypeError("is a share of the nodes, 0 to 1")
    return value


if __name__ == "__main__":
    sys.exit(main())
