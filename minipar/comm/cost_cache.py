"""The fitted cost model's JSON cache file, as ``comm`` reads it (``auto.py`` uses it).

    {"format": "minipar-cost/2",
     "links": {"intra": {"alpha": s, "beta": s/byte, "paced": false},
               "inter": {...}},                  # only when fitted on several hosts
     "gamma": s/byte, "overhead": {"ring": s, "recursive_doubling": s, "hierarchical": s},
     ... facts about the fit (cores, load average, where, when, the runs' raw medians)}

Written by ``minipar cost fit`` (``minipar/observe/cost/calibrate.py``) to
``MINIPAR_COST_CACHE`` or ~/.cache/minipar/machine.json, by a rename, so a reader
never sees half a file. Read with ``json.loads`` and checked field by field:
nothing in it is ever executed or unpickled, and a file that fails a check is
reported (a warning that names the field) and ignored.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = "minipar-cost/2"  # the "format" field of the cache file written by `minipar cost fit`
DEFAULT_CACHE = Path.home() / ".cache" / "minipar" / "machine.json"
AUTO_SMALL_BYTES = 64 * 1024  # auto.py's fixed rule, used without a model
CANDIDATES = ("ring", "recursive_doubling", "hierarchical")


def cache_path() -> Path:
    """Where the fitted model lives: ``MINIPAR_COST_CACHE``, else ~/.cache/minipar/machine.json."""
    override = os.environ.get("MINIPAR_COST_CACHE", "").strip()
    return Path(override) if override else DEFAULT_CACHE


@dataclass(frozen=True)
class Link:
    """One kind of link: seconds per message (alpha) and per byte (beta).

    ``paced``: the bytes are paced by the link (a NIC, a token bucket) while the CPU's
    per-message work overlaps them: a message costs max(alpha, n beta), not the sum.
    """

    alpha: float
    beta: float
    paced: bool = False

    def message(self, nbytes: float) -> float:
        """Seconds for one message of nbytes over this link."""
        return max(self.alpha, nbytes * self.beta) if self.paced else self.alpha + nbytes * self.beta


@dataclass(frozen=True)
class CostModel:
    """What ``minipar cost fit`` measured: links by kind, gamma, per-call overhead by algorithm."""

    intra: Link
    inter: Link | None  # None: fitted on one host only
    gamma: float
    overhead: dict[str, float]


def _seconds(data: Any, key: str, where: str) -> float:
    value = data.get(key) if isinstance(data, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0:
        raise ValueError(f"{where}{key} must be a finite number >= 0, got {value!r}")
    return float(value)


def _flag(link: Any, kind: str) -> bool:
    value = link.get("paced", False) if isinstance(link, dict) else None
    if not isinstance(value, bool):
        raise ValueError(f"links.{kind}.paced must be true or false, got {value!r}")
    return value


def model_from_json(data: Any) -> CostModel:
    """The CostModel in a parsed cache file; ValueError naming the first field that is wrong."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"format must be {FORMAT!r}, got {got!r} (an older minipar's cache?)")
    links = data.get("links")
    if not isinstance(links, dict) or "intra" not in links:
        raise ValueError("links must hold at least 'intra'")
    kinds = {kind: Link(_seconds(links[kind], "alpha", f"links.{kind}."),
                        _seconds(links[kind], "beta", f"links.{kind}."), _flag(links[kind], kind))
             for kind in ("intra", "inter") if kind in links}
    overhead = {name: _seconds(data.get("overhead"), name, "overhead.") for name in CANDIDATES}
    return CostModel(kinds["intra"], kinds.get("inter"), _seconds(data, "gamma", ""), overhead)


def model_to_json(model: CostModel, **facts: Any) -> dict[str, Any]:
    """The cache file's content for ``model``; ``facts`` (cores, load average, ...) ride along."""
    links = {"intra": vars(model.intra)} | ({"inter": vars(model.inter)} if model.inter else {})
    return {"format": FORMAT, "links": links, "gamma": model.gamma, "overhead": dict(model.overhead),
            **facts}


def read_cost_model(path: str | os.PathLike[str] | None = None) -> CostModel | None:
    """The model in the cache file, or None after a warning that says why it cannot be used."""
    path = Path(path) if path is not None else cache_path()
    try:
        return model_from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        reason = "there is none (run `minipar cost fit`)"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError, KeyError, TypeError) as error:
        reason = f"it cannot be used: {error} (run `minipar cost fit` again)"
    warnings.warn(f"allreduce(algorithm='auto'): no fitted cost model at {path}: {reason}; "
                  f"falling back to recursive doubling below {AUTO_SMALL_BYTES // 1024} KiB, ring "
                  "from there on", RuntimeWarning, stacklevel=3)
    return None
