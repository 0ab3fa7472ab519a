"""Record stores: one interface (``base.Store``), two implementations.

``meshnode.store.sqlite.SQLiteStore`` is the daemon's durable store;
``MemoryStore`` serves tests and the simulator. Both inherit the acceptance
rules (supersession, expiry, quotas, eviction) from ``Store``, so they cannot
drift apart. SQLite is not imported here, so the pure layers can use the
interface without pulling in ``sqlite3``.
"""

from meshnode.store.base import IngestResult as IngestResult
from meshnode.store.base import Outcome as Outcome
from meshnode.store.base import Store as Store
from meshnode.store.base import StoreError as StoreError
from meshnode.store.base import StoreLimits as StoreLimits
from meshnode.store.base import StoreStats as StoreStats
from meshnode.store.memory import MemoryStore as MemoryStore
