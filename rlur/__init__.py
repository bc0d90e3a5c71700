"""rlur: reinforcing user retention in short-video recommendation (Cai et al., WWW 2023).

``import rlur`` registers the Gymnasium environments (``rlur/Retention-v1``, ``rlur/Retention-v0``)
without importing the simulator; ``rlur.evaluate`` (:func:`rlur.evaluation.api.evaluate`) is
imported on first use.
"""

from __future__ import annotations

from typing import Any

from rlur.sim.registration import register_envs as _register_envs

__version__ = "0.1.0"
__all__ = ["__version__", "evaluate"]

_register_envs()


def __getattr__(name: str) -> Any:
    if name == "evaluate":
        from rlur.evaluation.api import evaluate

        return evaluate
    raise AttributeError(f"module 'rlur' has no attribute {name!r}")
