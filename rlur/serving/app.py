"""The ranking service: a FastAPI app around a hot-swappable :class:`~rlur.serving.ranker.Ranker`.

Endpoints (see ``docs/serving.md``): ``POST /v1/rank``, ``POST /v1/rank:batch``, ``GET /healthz``,
``GET /readyz``, ``GET /metrics``, ``POST /admin/reload``.

Design notes:

* Bodies are read raw and validated with ``Model.model_validate_json`` (pydantic-core parses and
  validates in one pass; no intermediate ``dict``); the request models are still published in the
  OpenAPI schema. Any validation failure, malformed JSON included, is a 422 naming the field.
* Work per request is bounded (:mod:`rlur.serving.bodies`): ``application/json`` only (415), a body
  cap per endpoint checked on ``Content-Length`` before reading and while reading (413), and bodies
  above 256 KiB validated in a thread, above 4 MiB in a child process, so a large body never stalls
  the event loop for longer than a mid-size body's JSON parse.
* Ranking runs inline in the event loop: it is short CPU work (one forward pass, one matmul) and a
  thread hop per request would cost more than it saves on a 2-core box.
* The policy lives in one attribute that a reload replaces: a handler reads it once, so in-flight
  requests finish on the policy they started with and a swap never drops a request.
* Loading (initial and reloads) runs in a worker thread, so ``/healthz`` answers at once and
  ``/readyz`` turns 200 when the first policy is in.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic_core
import torch
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from pydantic.json_schema import models_json_schema

from rlur.serving.bodies import (
    DEFAULT_PROCESS_BYTES,
    DEFAULT_THREAD_BYTES,
    BodyValidator,
    default_body_caps,
    is_json,
    read_capped,
)
from rlur.serving.metrics import CONTENT_TYPE, Metrics, MetricsMiddleware
from rlur.serving.ranker import Ranker, RankOutput, checkpoint_file
from rlur.serving.request_log import LogBatch, RequestLogWriter
from rlur.serving.schemas import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_CANDIDATES,
    HealthResponse,
    MessageResponse,
    NotReadyResponse,
    RankBatchRequest,
    RankBatchResponse,
    RankInput,
    RankRequest,
    RankResponse,
    ReadyResponse,
    ReloadResponse,
    ValidationErrorResponse,
    apply_limits,
)

__all__ = ["ServerState", "ServingConfig", "app_from_env", "config_to_env", "create_app"]

log = logging.getLogger("rlur.serving")

ENDPOINTS = (
    "/v1/rank", "/v1/rank:batch", "/healthz", "/readyz", "/metrics", "/admin/reload", "/openapi.json",
    "/docs",
)

@dataclass
class ServingConfig:
    """How to run the service. ``log_path=None`` logs to ``requests.sqlite`` next to the checkpoint."""

    checkpoint: str | Path
    log_path: str | Path | None = None
    request_log: bool = True
    log_candidates: bool = False
    max_candidates: int = DEFAULT_MAX_CANDIDATES
    max_batch: int = DEFAULT_MAX_BATCH
    max_body: dict[str, int] | None = None
    """Body caps by endpoint path, overriding :func:`~rlur.serving.bodies.default_body_caps`."""
    thread_bytes: int | None = DEFAULT_THREAD_BYTES
    """Bodies larger than this are validated in a worker thread (``None``: never)."""
    process_bytes: int | None = DEFAULT_PROCESS_BYTES
    """Bodies larger than this are validated in a child process (``None``: never)."""
    watch: bool = False
    watch_interval: float = 2.0
    admin_token: str | None = None
    seed: int | None = None
    workers: int = 1

    def body_caps(self) -> dict[str, int]:
        """Body cap per endpoint path: the defaults for ``max_candidates``, then ``max_body``."""
        return {**default_body_caps(self.max_candidates), **(self.max_body or {})}

    @property
    def checkpoint_file(self) -> Path:
        return checkpoint_file(self.checkpoint)

    def resolved_log_path(self) -> Path | None:
        if not self.request_log:
            return None
        if self.log_path is not None:
            return Path(self.log_path)
        return self.checkpoint_file.parent / "requests.sqlite"


def _stamp(file: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(file)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class ServerState:
    """Everything the handlers share: the current ranker, the request log, metrics, the noise generator."""

    def __init__(self, config: ServingConfig) -> None:
        self.config = config
        self.metrics = Metrics(ENDPOINTS)
        self.generator = torch.Generator()
        if config.seed is None:
            self.generator.seed()
        elif config.workers > 1:  # each worker process its own noise stream (per-request seeds stay exact)
            self.generator.manual_seed(hash((config.seed, os.getpid())) % 2**63)
        else:
            self.generator.manual_seed(config.seed)
        self.ranker: Ranker | None = None
        self.load_error: str | None = None
        self.log: RequestLogWriter | None = None
        self.context = {"max_candidates": config.max_candidates, "max_batch": config.max_batch}
        self.body_caps = config.body_caps()
        self.validator = BodyValidator(self.context, config.thread_bytes, config.process_bytes)
        self.validator_ready = False
        self._reload_lock = asyncio.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._failed_stamp: tuple[int, int, int] | None = None

    # -- policy --------------------------------------------------------------------------------
    async def reload(self) -> dict[str, Any]:
        """Load the checkpoint in a worker thread and swap it in; on failure raise and keep the old one."""
        async with self._reload_lock:
            file = self.config.checkpoint_file
            stamp = _stamp(file)
            try:
                new = await asyncio.to_thread(Ranker.from_checkpoint, file)
            except Exception as err:
                self.metrics.reload_failures += 1
                self._failed_stamp = stamp
                if self.ranker is None:
                    self.load_error = str(err)
                log.error("policy load from %s failed: %s", file, err)
                raise
            old, self.ranker = self.ranker, new
            self._stamp, self.load_error = stamp, None
            self.metrics.reloads += 1
            log.info("serving policy %s (%s) from %s", new.version, new.sha256[:12], file)
            return {
                "policy_version": new.version,
                "previous_version": None if old is None else old.version,
                "changed": old is None or old.sha256 != new.sha256,
            }

    async def initial_load(self) -> None:
        """Load the policy and start the validation process; /readyz answers 200 once both are done."""

        async def load() -> None:
            try:
                await self.reload()
            except Exception:  # reported by /readyz; --watch retries once the file changes
                pass

        await asyncio.gather(load(), self.validator.warm())
        self.validator_ready = True

    async def watch(self) -> None:
        """Poll the checkpoint's mtime/size/inode and reload when it changes."""
        file = self.config.checkpoint_file
        while True:
            await asyncio.sleep(self.config.watch_interval)
            stamp = _stamp(file)
            if stamp is not None and stamp != self._stamp and stamp != self._failed_stamp:
                try:
                    await self.reload()
                except Exception:
                    pass

    # -- request log -----------------------------------------------------------------------------
    def open_log(self) -> None:
        path = self.config.resolved_log_path()
        if path is not None:
            self.log = RequestLogWriter(path)

    def close_log(self) -> None:
        if self.log is not None:
            self.log.close()

    # -- serving ---------------------------------------------------------------------------------
    def finish(
        self, ranker: Ranker, inputs: Sequence[RankInput], out: RankOutput, endpoint: str,
    ) -> list[dict[str, Any]]:
        """Turn the ranker's output into response dicts and queue the log records."""
        b = len(inputs)
        if b == 1:
            rids = [inputs[0].request_id or uuid.uuid4().hex]
        else:  # one UUID per call, suffixed with the position: unique, and cheaper than B UUIDs
            base = uuid.uuid4().hex
            rids = [r.request_id or f"{base}-{i}" for i, r in enumerate(inputs)]
        top = out.top.tolist()
        shown = [[inp.ids[j] for j in t] for inp, t in zip(inputs, top, strict=True)]
        action, mu, sigma = out.action.tolist(), out.mu.tolist(), out.sigma.tolist()
        lp = out.log_prob.tolist()
        version = ranker.version
        results = [
            {"request_id": rids[i], "top_ids": shown[i], "action": action[i], "mu": mu[i], "sigma": sigma[i],
             "log_prob": lp[i], "policy_version": version}
            for i in range(b)
        ]
        self.metrics.ranked += b
        if self.log is not None:
            self.log.submit(LogBatch(
                ts=time.time(), policy_version=version, endpoint=endpoint, request_ids=rids,
                user_ids=[r.user_id for r in inputs], groups=[r.group for r in inputs],
                state=out.obs, action=out.action, mu=out.mu, sigma=out.sigma,
                log_prob=out.log_prob, deterministic=[r.deterministic for r in inputs],
                seeds=[r.seed for r in inputs], shown_ids=shown, shown_pos=out.top,
                n_candidates=[len(r.ids) for r in inputs],
                candidate_ids=[list(r.ids) for r in inputs] if self.config.log_candidates else None,
            ))
        return results

    def gauges(self) -> dict[str, tuple[str, list[tuple[dict[str, str], float]]]]:
        r = self.ranker
        g: dict[str, tuple[str, list[tuple[dict[str, str], float]]]] = {
            "rlur_policy_loaded": ("1 once a policy is loaded.", [({}, 0 if r is None else 1)]),
        }
        if r is not None:
            g["rlur_policy_info"] = ("The policy served.", [({"version": r.version, "algo": r.algo}, 1)])
        if self.log is not None:
            lg = self.log
            g["rlur_request_log_rows_written"] = ("Request log rows written.", [({}, lg.rows_written)])
            g["rlur_request_log_pending_rows"] = ("Request log rows queued, unwritten.", [({}, lg.pending)])
            g["rlur_request_log_failed_rows"] = ("Request log rows that failed to write.", [({}, lg.errors)])
        return g


def _json(obj: Any, status: int = 200) -> Response:
    return Response(content=pydantic_core.to_json(obj), status_code=status, media_type="application/json")


def _refuse_unread(detail: str, status: int) -> Response:
    """A 413/415/503 sent before the body was read (in full): ``Connection: close`` makes uvicorn close the
    connection after it instead of reading and discarding the rest of the body."""
    response = _json({"detail": detail}, status)
    response.headers["connection"] = "close"
    return response


def _body_schema(model: str) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}}}}}


_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": MessageResponse, "description": "Body larger than this endpoint's cap (`rlur serve --max-body`)"},
    415: {"model": MessageResponse, "description": "Content-Type is not application/json"},
    422: {"model": ValidationErrorResponse, "description": "Invalid request; `loc` names the field"},
    503: {"model": MessageResponse, "description": "No policy loaded yet, or the validation process restarted"},
}


def _st(request: Request) -> ServerState:
    return request.app.state.rlur


async def healthz() -> Response:
    return _json({"status": "ok"})


async def readyz(request: Request) -> Response:
    state = _st(request)
    r = state.ranker
    if r is None:
        return _json({"ready": False, "error": state.load_error}, 503)
    if not state.validator_ready:
        return _json({"ready": False, "error": "the validation process is starting"}, 503)
    return _json({"ready": True, **r.info})


async def metrics(request: Request) -> Response:
    state = _st(request)
    return Response(state.metrics.render(state.gauges()), media_type=CONTENT_TYPE)


async def _serve(request: Request, batch: bool) -> Response:
    state = _st(request)
    endpoint = "/v1/rank:batch" if batch else "/v1/rank"
    if not is_json(request.headers.get("content-type")):
        return _refuse_unread("Content-Type must be application/json", 415)
    cap = state.body_caps[endpoint]
    ranker = state.ranker  # read once: a concurrent reload never changes the policy under this request
    if ranker is None:
        return _refuse_unread("no policy loaded yet", 503)
    body = await read_capped(request, cap)
    if body is None:
        return _refuse_unread(f"request body larger than {cap} bytes, the cap of {endpoint}", 413)
    try:
        inputs, detail = await state.validator.validate(body, batch)
    except RuntimeError as err:
        return _json({"detail": str(err)}, 503)
    if inputs is None:
        return _json({"detail": detail}, 422)
    out = ranker.rank(inputs, state.generator)
    results = state.finish(ranker, inputs, out, endpoint)
    if batch:
        return _json({"results": results, "policy_version": ranker.version})
    return _json(results[0])


async def rank(request: Request) -> Response:
    return await _serve(request, batch=False)


async def rank_batch(request: Request) -> Response:
    return await _serve(request, batch=True)


async def admin_reload(request: Request) -> Response:
    state = _st(request)
    token = state.config.admin_token
    if token is not None and not hmac.compare_digest(
        request.headers.get("x-admin-token", "").encode(), token.encode()
    ):
        return _json({"detail": "missing or wrong X-Admin-Token header"}, 403)
    try:
        result = await state.reload()
    except Exception as err:
        kept = state.ranker.version if state.ranker is not None else "nothing"
        return _json({"detail": f"reload failed: {err}; still serving {kept}"}, 409)
    return _json(result)


class _MetricsText(Response):
    media_type = CONTENT_TYPE


def _admin_security(app: FastAPI) -> dict[str, Any]:
    """The X-Admin-Token requirement, stated in the schema only when a token is configured."""
    return {"security": [{"AdminToken": []}]} if app.state.rlur.config.admin_token is not None else {}


def _add_routes(app: FastAPI) -> None:
    get, post = ["GET"], ["POST"]
    app.add_api_route(
        "/healthz", healthz, methods=get, summary="Liveness: the process answers", response_model=HealthResponse,
    )
    app.add_api_route(
        "/readyz", readyz, methods=get, summary="Readiness: 200 once a policy is loaded, else 503",
        response_model=ReadyResponse,
        responses={503: {"model": NotReadyResponse, "description": "No policy loaded yet"}},
    )
    app.add_api_route(
        "/metrics", metrics, methods=get, summary="Prometheus metrics (text format 0.0.4)",
        response_class=_MetricsText,
        responses={200: {"description": "Prometheus text exposition format 0.0.4",
                         "content": {CONTENT_TYPE: {"schema": {"type": "string"}}}}},
    )
    app.add_api_route(
        "/v1/rank", rank, methods=post, summary="Rank one request's candidates", response_model=RankResponse,
        openapi_extra=_body_schema("RankRequest"), responses=_ERRORS,
    )
    app.add_api_route(
        "/v1/rank:batch", rank_batch, methods=post, summary="Rank many requests with one forward pass",
        response_model=RankBatchResponse, openapi_extra=_body_schema("RankBatchRequest"), responses=_ERRORS,
    )
    app.add_api_route(
        "/admin/reload", admin_reload, methods=post, summary="Reload the checkpoint and swap the policy",
        response_model=ReloadResponse, openapi_extra=_admin_security(app), responses={
            403: {"model": MessageResponse, "description": "Missing or wrong X-Admin-Token"},
            409: {"model": MessageResponse, "description": "The checkpoint failed to load; old policy kept"},
        },
    )


#: Environment variable through which ``rlur serve --workers N`` hands its config to each worker process.
CONFIG_ENV = "RLUR_SERVE_CONFIG"


def config_to_env(config: ServingConfig, torch_threads: int = 1) -> str:
    """``config`` (and the workers' torch thread count) as the JSON text :func:`app_from_env` reads."""
    d = {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(config).items()}
    return json.dumps({"config": d, "torch_threads": torch_threads})


def app_from_env() -> FastAPI:
    """The app factory uvicorn's worker processes call (``rlur.serving.app:app_from_env``)."""
    text = os.environ.get(CONFIG_ENV)
    if not text:
        raise RuntimeError(f"{CONFIG_ENV} is not set: start workers with `rlur serve --workers N`")
    payload = json.loads(text)
    torch.set_num_threads(payload["torch_threads"])
    return create_app(ServingConfig(**payload["config"]))


def create_app(config: ServingConfig) -> FastAPI:
    """Build the app. The policy is loaded (in a thread) when the app starts, e.g. under uvicorn."""
    state = ServerState(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.open_log()
        tasks = []
        if config.workers > 1:
            # Accept only once the policy is loaded: the workers share one socket, so a worker still
            # loading leaves its connections to the others instead of answering 503 after /readyz
            # (answered by another worker) said ready.
            await state.initial_load()
        else:  # one process: answer /healthz and /readyz (503) while the policy loads
            tasks.append(asyncio.create_task(state.initial_load()))
        if config.watch:
            tasks.append(asyncio.create_task(state.watch()))
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            state.validator.close()
            state.close_log()

    app = FastAPI(
        title="rlur ranking API",
        version="1",
        description="Per request: the user state goes to the RLUR actor, which returns (μ, σ); the action "
        "a ~ N(μ, σ) (or μ) sets the fusion weights; the top 6 candidates by Σ_l w_l x_l / score_ref_l "
        "are shown. The served μ, σ and log-probability are returned and logged.",
        lifespan=lifespan,
    )
    app.state.rlur = state
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    _add_routes(app)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            _, defs = models_json_schema(
                [(RankRequest, "validation"), (RankBatchRequest, "validation")],
                ref_template="#/components/schemas/{model}",
            )
            components = schema.setdefault("components", {})
            components.setdefault("schemas", {}).update(defs.get("$defs", {}))
            apply_limits(components["schemas"], config.max_candidates, config.max_batch)
            if config.admin_token is not None:
                components["securitySchemes"] = {
                    "AdminToken": {"type": "apiKey", "in": "header", "name": "X-Admin-Token"},
                }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
