"""Schemathesis hooks for the ranking API: the cross-field rules that JSON Schema cannot state.

The OpenAPI schema states every per-field rule the server enforces; three rules relate fields to
each other and are listed under ``x-rlur-rules`` instead: as many score rows as ``candidate_ids``,
distinct ``id``s in ``candidates``, distinct ``request_id``s in a batch. This hook makes generated
*positive* requests keep them (negative ones are left alone), so ``positive_data_acceptance`` tests
what the schema promises::

    SCHEMATHESIS_HOOKS=rlur.serving.schemathesis_hooks schemathesis run http://127.0.0.1:8000/openapi.json --checks all

Importing this module registers the hook (it needs the ``schemathesis`` package, a dev dependency).
"""

from __future__ import annotations

from typing import Any

import schemathesis

__all__ = ["keep_cross_field_rules"]

_HEX_ROW = 64  # hex digits per row of k = 8 float32


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _resize(rows: list[Any], n: int) -> list[Any]:
    """``rows`` cut or cycled to ``n`` entries."""
    return [rows[i % len(rows)] for i in range(n)]


def _keep_request_rules(req: dict[str, Any]) -> None:
    cands = req.get("candidates")
    if isinstance(cands, list) and all(isinstance(c, dict) and _is_number(c.get("id")) for c in cands):
        used = {c["id"] for c in cands}  # 1 and 1.0 are one value, as in JSON Schema's uniqueItems
        seen: set[float] = set()
        fresh = 0
        for c in cands:
            if c["id"] in seen:
                while fresh in used:
                    fresh += 1
                c["id"] = fresh
                used.add(fresh)
            seen.add(c["id"])
    ids = req.get("candidate_ids")
    if not isinstance(ids, list) or not ids:
        return
    if isinstance(req.get("scores"), list) and req["scores"]:
        req["scores"] = _resize(req["scores"], len(ids))
    hexed = req.get("scores_hex")
    if isinstance(hexed, str) and hexed and len(hexed) % _HEX_ROW == 0:
        rows = [hexed[i : i + _HEX_ROW] for i in range(0, len(hexed), _HEX_ROW)]
        req["scores_hex"] = "".join(_resize(rows, len(ids)))


def keep_cross_field_rules(body: Any) -> Any:
    """``body`` (a ``/v1/rank`` or ``/v1/rank:batch`` body) changed in place to keep the ``x-rlur-rules``."""
    if not isinstance(body, dict):
        return body
    reqs = body.get("requests")
    if isinstance(reqs, list):
        seen: set[str] = set()
        for req in reqs:
            if not isinstance(req, dict):
                continue
            _keep_request_rules(req)
            rid = req.get("request_id")
            if isinstance(rid, str):
                if rid in seen:
                    del req["request_id"]
                seen.add(rid)
    else:
        _keep_request_rules(body)
    return body


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    """Apply :func:`keep_cross_field_rules` to the bodies of positive cases."""
    meta = getattr(case, "meta", None)
    if meta is not None and not meta.generation.mode.is_positive:
        return case
    if case.body is not None and not isinstance(case.body, (bytes, str)):
        case.body = keep_cross_field_rules(case.body)
    return case
