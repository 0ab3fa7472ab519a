"""meshnode: a serverless, local-first mesh node.

The package is split so that the layering is visible at a glance:

- ``meshnode.core``: the pure, sans-IO protocol core (no sockets, no trio, no
  sqlite3, no clock reads).
- ``meshnode.store``: the record store interface and its SQLite and in-memory
  implementations.
- ``meshnode.runtime``: the trio daemon at the edges (control socket, store
  thread, signals).
- ``meshnode.client`` and ``meshnode.client.cli``: the blocking control-socket client
  and the ``meshnode`` command, which import neither trio nor zeroconf.
"""

__version__ = "0.8.0"
