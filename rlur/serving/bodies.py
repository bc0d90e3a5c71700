"""Bounded work per request body: media type, size caps, and validation off the event loop.

* Only ``application/json`` bodies are read (415 otherwise), before any byte of the body.
* Each endpoint has a body cap (:func:`default_body_caps`): a ``Content-Length`` above it is refused
  before reading, and a chunked body stops being read at the cap (413 either way).
* A small body is validated inline, a mid-size one in a thread, a large one in a child process
  (:class:`BodyValidator`): pydantic-core holds the GIL while it parses, so only a process keeps the
  event loop free for any size; in it, ``/healthz`` and small requests keep their latency while a
  large body is parsed and, if invalid, rejected.
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request

from rlur.serving.schemas import (
    INT64_MIN,
    SLATE_SIZE,
    K,
    RankBatchRequest,
    RankInput,
    RankRequest,
)
from rlur.sim.env import OBS_DIM
from rlur.sim.world import GROUPS, SCORE_NAMES

__all__ = [
    "BODY_ENDPOINTS",
    "DEFAULT_PROCESS_BYTES",
    "DEFAULT_THREAD_BYTES",
    "BodyValidator",
    "default_body_caps",
    "is_json",
    "largest_request_bytes",
    "parse_size",
    "read_capped",
    "validate_body",
]

log = logging.getLogger("rlur.serving")

#: Endpoints that take a body, with the name ``--max-body`` uses for each.
BODY_ENDPOINTS = {"rank": "/v1/rank", "batch": "/v1/rank:batch"}
#: Bodies larger than this are validated in a worker thread ...
DEFAULT_THREAD_BYTES = 256 * 2**10
#: ... and larger than this in the child process.
DEFAULT_PROCESS_BYTES = 4 * 2**20
#: The batch cap: 64 MiB holds 1,024 requests of 200 candidates in the slowest (objects) form.
DEFAULT_BATCH_BODY_BYTES = 64 * 2**20
MAX_ERRORS = 20
_LONGEST_NUMBER = len("-1.2345678901234567e-123")
_UNITS = {"": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20,
          "g": 2**30, "gb": 2**30, "gib": 2**30}


def is_json(content_type: str | None) -> bool:
    """Whether a Content-Type header names ``application/json`` (parameters such as charset allowed)."""
    return content_type is not None and content_type.split(";", 1)[0].strip().lower() == "application/json"


def parse_size(text: str) -> int:
    """``"1048576"``, ``"512K"``, ``"64MiB"``, ``"1G"`` → bytes (binary units); ``ValueError`` otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"expected a size such as 1048576, 512K or 64MiB, got {text!r}")
    value = int(m.group(1)) * _UNITS[m.group(2).lower()]
    if value <= 0:
        raise ValueError(f"expected a positive size, got {text!r}")
    return value


def largest_request_bytes(max_candidates: int) -> int:
    """Bytes of the longest valid ``/v1/rank`` body in compact JSON (no whitespace, ASCII escapes).

    Every number at its longest shortest-round-trip text (24 characters, as Python or JavaScript
    write a float64), every optional field present at its longest, and the longest of the three
    candidate forms (objects with named scores).
    """
    num = _LONGEST_NUMBER
    int64 = len(str(INT64_MIN))
    named = sum(len(f'"{n}":') + num for n in SCORE_NAMES) + K - 1 + 2
    candidate = len('{"id":,"scores":}') + int64 + named
    candidates = len('"candidates":[]') + max_candidates * (candidate + 1)
    state = len('"state":[]') + OBS_DIM * (num + 1)
    group = len('"group":""') + max(len(g) for g in GROUPS)
    escaped = len("\\ud83d\\ude00")  # a character outside the BMP, written as an escaped surrogate pair
    user_id = len('"user_id":""') + 256 * escaped
    request_id = len('"request_id":""') + 128 * escaped
    rest = len('"deterministic":false') + len('"seed":') + len(str(2**63 - 1))
    return 2 + candidates + state + group + user_id + request_id + rest + 8


def default_body_caps(max_candidates: int) -> dict[str, int]:
    """Body caps per endpoint: ``/v1/rank`` the longest valid request rounded up to 64 KiB, the batch
    endpoint :data:`DEFAULT_BATCH_BODY_BYTES` (see docs/serving.md for what it holds)."""
    step = 64 * 2**10
    one = math.ceil(largest_request_bytes(max_candidates) / step) * step
    return {"/v1/rank": one, "/v1/rank:batch": max(DEFAULT_BATCH_BODY_BYTES, one)}


async def read_capped(request: Request, limit: int) -> bytes | None:
    """The body, or ``None`` as soon as it is known to exceed ``limit`` bytes.

    A ``Content-Length`` above the limit returns before a byte is read; a chunked body is read only
    up to the limit (the server then closes the connection instead of draining the rest).
    """
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        return None
    chunks, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def error_detail(err: ValidationError) -> list[dict[str, Any]]:
    """The 422 ``detail`` list: at most :data:`MAX_ERRORS` entries, without echoing the input."""
    errors = err.errors(include_url=False, include_context=False, include_input=False)
    detail: list[dict[str, Any]] = [
        {"type": e["type"], "loc": ["body", *e["loc"]], "msg": e["msg"]} for e in errors[:MAX_ERRORS]
    ]
    if len(errors) > MAX_ERRORS:
        more = f"{len(errors) - MAX_ERRORS} more errors"
        detail.append({"type": "too_many_errors", "loc": ["body"], "msg": more})
    return detail


def validate_body(body: bytes, batch: bool, context: dict[str, int]) -> tuple[list[RankInput] | None, list]:
    """``(inputs, [])`` for a valid body, ``(None, detail)`` for an invalid one. Runs in either process."""
    try:
        if batch:
            reqs = RankBatchRequest.model_validate_json(body, context=context).requests
        else:
            reqs = [RankRequest.model_validate_json(body, context=context)]
    except ValidationError as err:
        return None, error_detail(err)
    return [r.to_input() for r in reqs], []


def _warm() -> int:
    return SLATE_SIZE


def _exit_with_parent(parent: int) -> None:
    """In the child: exit once the server process is gone (even if it was killed without a shutdown)."""
    import os
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


class BodyValidator:
    """Validates a body inline, in a worker thread, or in one child process, by its size.

    * up to ``thread_bytes`` (256 KiB): inline, tens to hundreds of microseconds;
    * up to ``process_bytes`` (4 MiB): in a thread. pydantic-core holds the GIL while it parses the JSON
      text, so the event loop can wait up to that parse (about 10 ms for a 3.3 MB batch), but not for
      the validation, which returns to Python between requests;
    * larger: in a child process, so the event loop never waits on it. The child is spawned (not
      forked: the parent holds torch and uvicorn threads) at start-up; if it dies (e.g. killed for
      memory), that request gets a 503 and the next large body starts a new one.

    ``None`` turns a tier off (``thread_bytes=None, process_bytes=None``: everything inline).
    """

    def __init__(
        self, context: dict[str, int], thread_bytes: int | None = DEFAULT_THREAD_BYTES,
        process_bytes: int | None = DEFAULT_PROCESS_BYTES,
    ) -> None:
        self.context = context
        self.thread_bytes = thread_bytes
        self.process_bytes = process_bytes
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> asyncio.Future[Any] | None:
        """Spawn the child (it imports in the background); the returned future resolves once it runs."""
        if self.process_bytes is None:
            return None
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("spawn"), initializer=_exit_with_parent,
                initargs=(os.getpid(),),
            )
        return asyncio.wrap_future(self._pool.submit(_warm))

    async def warm(self) -> None:
        """Start the child and wait until it answers (a failure is logged; large bodies then get 503)."""
        started = self.start()
        if started is not None:
            try:
                await started
            except Exception as err:
                log.error("the validation process failed to start: %s", err)

    def close(self) -> None:
        """Stop the child. At server shutdown uvicorn has drained the requests, so nothing is waited for."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    async def validate(self, body: bytes, batch: bool) -> tuple[list[RankInput] | None, list]:
        """As :func:`validate_body`; raises ``RuntimeError`` when the child process died meanwhile."""
        n = len(body)
        if self.process_bytes is not None and n > self.process_bytes:
            return await self._in_process(body, batch)
        if self.thread_bytes is not None and n > self.thread_bytes:
            return await asyncio.to_thread(validate_body, body, batch, self.context)
        return validate_body(body, batch, self.context)

    async def _in_process(self, body: bytes, batch: bool) -> tuple[list[RankInput] | None, list]:
        self.start()
        assert self._pool is not None
        try:
            return await asyncio.wrap_future(self._pool.submit(validate_body, body, batch, self.context))
        except BrokenProcessPool:
            log.error("the validation process died; starting a new one")
            self.close()
            raise RuntimeError("the validation process died while validating this body; retry") from None
