"""Snapshots: the file format (``format.py``), one checksummed, never-pickled file per state
(``local.py``), a directory of shards committed atomically across ranks (``sharded.py``), and
injected faults to test restarts with (``fault.py``)."""

from minipar.snapshot.format import SnapshotError
from minipar.snapshot.local import from_bytes, load, save, to_bytes

__all__ = ["SnapshotError", "from_bytes", "load", "save", "to_bytes"]
