"""The ranking service: FastAPI app, batched ranker, request log, and policy export.

``rlur serve --checkpoint DIR`` runs it; :func:`read_request_log` turns its log into tensors for
training. See ``docs/serving.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "RankInput",
    "RankOutput",
    "Ranker",
    "RequestLogWriter",
    "ServingConfig",
    "create_app",
    "export_policy",
    "read_request_log",
]

_LAZY = {
    "RankInput": "rlur.serving.schemas",
    "RankOutput": "rlur.serving.ranker",
    "Ranker": "rlur.serving.ranker",
    "RequestLogWriter": "rlur.serving.request_log",
    "read_request_log": "rlur.serving.request_log",
    "ServingConfig": "rlur.serving.app",
    "create_app": "rlur.serving.app",
    "export_policy": "rlur.serving.export",
}

if TYPE_CHECKING:
    from rlur.serving.app import ServingConfig, create_app
    from rlur.serving.export import export_policy
    from rlur.serving.ranker import Ranker, RankOutput
    from rlur.serving.request_log import RequestLogWriter, read_request_log
    from rlur.serving.schemas import RankInput


def __getattr__(name: str) -> Any:
    # Lazy: the trainer imports read_request_log without paying for FastAPI.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rlur.serving' has no attribute {name!r}")
