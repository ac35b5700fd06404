"""Snapshots: the format a path gets (``files.py``), the snapshot file format (``format.py``),
one checksummed, never-pickled file per state (``local.py``), safetensors
(``safetensors_io.py``), a directory of shards committed atomically across ranks
(``sharded.py``), and injected faults to test restarts with (``fault.py``)."""

from minipar.snapshot.files import load, save
from minipar.snapshot.format import SnapshotError
from minipar.snapshot.local import from_bytes, to_bytes

__all__ = ["SnapshotError", "from_bytes", "load", "save", "to_bytes"]
