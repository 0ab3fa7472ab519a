"""The shape of the overlay the engines built: who holds a session with whom, at one moment.

What the issue's figures ask of a self-organising overlay: every node within
its connection bounds, none without neighbours, one connected whole, and a
low diameter (the longest of the shortest paths, in hops).
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from msgspec import Struct


class Shape(Struct, frozen=True):
    nodes: int
    degree_min: int
    degree_median: float
    degree_mean: float
    degree_max: int
    isolated: int  # nodes without a neighbour
    components: int
    diameter: int | None  # None: not connected
    degrees: dict[int, int]  # degree -> how many nodes have it

    def as_json(self) -> dict[str, Any]:
        return {
            "nodes": self.nodes,
            "degree_min": self.degree_min,
            "degree_median": self.degree_median,
            "degree_mean": round(self.degree_mean, 2),
            "degree_max": self.degree_max,
            "isolated": self.isolated,
            "components": self.components,
            "diameter": self.diameter,
            "degrees": {str(d): n for d, n in sorted(self.degrees.items())},
        }


def shape_of(neighbours: Mapping[int, Sequence[int]]) -> Shape:
    """The shape of an undirected graph given as node -> its neighbours (both ways listed)."""
    if not neighbours:
        return Shape(0, 0, 0.0, 0.0, 0, 0, 0, None, {})
    degrees = [len(set(n)) for n in neighbours.values()]
    histogram: dict[int, int] = {}
    for degree in degrees:
        histogram[degree] = histogram.get(degree, 0) + 1
    components = 0
    seen: set[int] = set()
    for start in neighbours:
        if start not in seen:
            components += 1
            seen |= _distances(neighbours, start).keys()
    diameter = None
    if components == 1:
        diameter = max(max(_distances(neighbours, n).values()) for n in neighbours)
    return Shape(
        nodes=len(neighbours),
        degree_min=min(degrees),
        degree_median=statistics.median(degrees),
        degree_mean=statistics.fmean(degrees),
        degree_max=max(degrees),
        isolated=sum(1 for d in degrees if d == 0),
        components=components,
        diameter=diameter,
        degrees=histogram,
    )


def _distances(neighbours: Mapping[int, Sequence[int]], start: int) -> dict[int, int]:
    found = {start: 0}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for other in neighbours[node]:
            if other not in found and other in neighbours:
                found[other] = found[node] + 1
                queue.append(other)
    return found
