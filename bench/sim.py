"""The simulator's own figures, and today's flood as the baseline the next issues must beat.

Runs, each a ``meshnode.sim.scenario.Scenario`` on one core:

- ``speed``: 1,000 nodes, 200 records, 60 virtual seconds, degree 5. Goal:
  ``wall_s <= 60``. (``--records 1000`` for the second figure: a goal of 120 s.)
- ``baseline``: the flood at N = 100 and N = 1,000: the share of nodes reached,
  virtual time to 50/99/100 %, copies of each record received per node, and
  wire bytes per delivered record over the record's size.
- ``faults``: N = 100, 10 % crashed at once, a partition of 30 s, 20 % churn;
  the time from the end of faults to convergence.

    python bench/sim.py speed|baseline|faults [--nodes N] [--records R] [--seed K] [--profile]

``--profile`` runs under cProfile and prints, on stderr, the time by layer and the top
functions: what dominates a run (it slows the run about twofold; quote the unprofiled wall).

Prints one JSON line per run, last on stdout.
"""

from __future__ import annotations

import argparse

from _common import emit, log
from _profile import format_table, profiled

from meshnode.sim.scenario import Scenario, run

GOAL_WALL_S = {200: 60.0, 1000: 120.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("speed", "baseline", "faults"))
    parser.add_argument("--nodes", type=int)
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="time by layer, on stderr")
    args = parser.parse_args()
    if args.what == "speed":
        scenarios = [Scenario(args.nodes or 1000, args.records, 60.0, seed=args.seed)]
    elif args.what == "baseline":
        sizes = [args.nodes] if args.nodes else [100, 1000]
        scenarios = [Scenario(n, args.records, 60.0, seed=args.seed) for n in sizes]
    else:
        scenarios = [
            Scenario(
                args.nodes or 100,
                args.records,
                240.0,
                seed=args.seed,
                crash=0.1,
                partition=30.0,
                churn=0.2,
            )
        ]
    for scenario in scenarios:
        log(f"simulating {scenario.nodes} nodes, {scenario.records} records")
        if args.profile:
            report, layers, functions = profiled(lambda s=scenario: run(s))
            log(format_table(layers, "own time by layer (cProfile):"))
            log(format_table(functions, "top functions by own time:"))
        else:
            report, layers = run(scenario), []
        figures = {"bench": f"sim-{args.what}", **report.as_json()}
        if layers:
            figures["profile_layers"] = layers
        goal = GOAL_WALL_S.get(scenario.records) if args.what == "speed" else None
        if goal is not None:
            figures["goal_wall_s"] = goal
            figures["meets_goal"] = figures["wall_s"] <= goal
        emit(figures)


if __name__ == "__main__":
    main()
