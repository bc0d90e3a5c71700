"""Past one machine: Ray for benchmark grids, sharded simulation, sharded collection and A/B arms.

Ray is an optional extra (``pip install 'rlur[ray]'``); nothing here imports it until a command asks
for ``--backend ray``. The pieces:

* :mod:`rlur.distributed.backend`: ``--backend/--ray-address/--ray-cpus`` and joining or starting a cluster;
* :mod:`rlur.distributed.blocks`: fixed-size user blocks with per-block seeds (results do not depend on
  how many workers run them);
* :mod:`rlur.distributed.shards`: ``rlur simulate`` over blocks, in-process or on Ray actors, reduced exactly;
* :mod:`rlur.distributed.collect`: ``rlur train --backend ray``, transitions gathered from shard actors;
* :mod:`rlur.distributed.grid`: ``rlur benchmark --backend ray``, one Ray task per (row, seed) run;
* :mod:`rlur.distributed.abtest`: ``rlur abtest`` arms and their user shards as actors.
"""

from __future__ import annotations

from typing import Any

from rlur.cli import CliError

__all__ = ["RAY_MISSING", "RayNotInstalledError", "require_ray"]

RAY_MISSING = "Ray is not installed: pip install 'rlur[ray]'"


class RayNotInstalledError(CliError, ImportError):
    """``--backend ray`` without Ray: a one-line CLI error, and an ``ImportError`` for library callers."""


def require_ray() -> Any:
    """The ``ray`` module, or :class:`RayNotInstalledError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RayNotInstalledError(RAY_MISSING) from None
    return ray
