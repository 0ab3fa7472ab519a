"""A deterministic simulator of many nodes, on the real engine: like ``trio.testing``, for meshes.

``meshnode.sim.network`` is the discrete-event network (links, crashes,
partitions); ``meshnode.sim.scenario`` a run of it with a workload, faults,
figures and invariants; ``python -m meshnode.sim`` its command line. No part
of it is a protocol of its own: every node is a ``meshnode.engine.mesh.Mesh``.
"""
