"""Prometheus metrics in the text exposition format (0.0.4), without a client library.

The server needs three counters, a latency histogram and a few gauges from one process, so the text
format is written directly (about a hundred lines) instead of depending on ``prometheus_client``.
:class:`MetricsMiddleware` is a plain ASGI middleware (no per-request task or body copy).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["LATENCY_BUCKETS", "Metrics", "MetricsMiddleware"]

#: Latency histogram bucket upper bounds, seconds.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**kv: str) -> str:
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in kv.items()) + "}"


def _num(v: float) -> str:
    return repr(float(v)) if isinstance(v, float) else str(v)


class Metrics:
    """Request counts by endpoint/method/status, a latency histogram per endpoint, and extra samples."""

    def __init__(self, endpoints: Iterable[str]) -> None:
        self.endpoints = frozenset(endpoints)
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str], int] = {}
        self._hist: dict[str, list[float]] = {}  # bucket counts..., +Inf count, sum
        self.ranked = 0
        self.reloads = 0
        self.reload_failures = 0

    def endpoint_label(self, path: str) -> str:
        """The path if it is a known endpoint, else ``other`` (bounded label cardinality)."""
        return path if path in self.endpoints else "other"

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (endpoint, method, str(status))
            self._counts[key] = self._counts.get(key, 0) + 1
            h = self._hist.get(endpoint)
            if h is None:
                h = self._hist[endpoint] = [0.0] * (len(LATENCY_BUCKETS) + 2)
            for i, upper in enumerate(LATENCY_BUCKETS):
                if seconds <= upper:
                    h[i] += 1
                    break
            else:
                h[len(LATENCY_BUCKETS)] += 1
            h[-1] += seconds

    def render(self, gauges: dict[str, tuple[str, list[tuple[dict[str, str], float]]]] | None = None) -> str:
        """The exposition text; ``gauges``: name → (help, [(labels, value)])."""
        out = [
            "# HELP rlur_http_requests_total HTTP requests by endpoint, method and status code.",
            "# TYPE rlur_http_requests_total counter",
        ]
        with self._lock:
            counts = sorted(self._counts.items())
            hist = {k: list(v) for k, v in sorted(self._hist.items())}
            ranked, reloads, failures = self.ranked, self.reloads, self.reload_failures
        for (ep, method, status), n in counts:
            out.append(f"rlur_http_requests_total{_labels(endpoint=ep, method=method, status=status)} {n}")
        out += [
            "# HELP rlur_http_request_duration_seconds Time from request start to the last response byte.",
            "# TYPE rlur_http_request_duration_seconds histogram",
        ]
        for ep, h in hist.items():
            cum = 0.0
            for upper, n in zip((*LATENCY_BUCKETS, float("inf")), h[:-1], strict=True):
                cum += n
                le = "+Inf" if upper == float("inf") else repr(upper)
                lab = _labels(endpoint=ep, le=le)
                out.append(f"rlur_http_request_duration_seconds_bucket{lab} {int(cum)}")
            out.append(f"rlur_http_request_duration_seconds_sum{_labels(endpoint=ep)} {h[-1]!r}")
            out.append(f"rlur_http_request_duration_seconds_count{_labels(endpoint=ep)} {int(cum)}")
        for name, help_, kind, value in (
            ("rlur_ranked_requests_total", "Ranking requests served (a batch counts each of its items).",
             "counter", ranked),
            ("rlur_policy_reloads_total", "Successful policy (re)loads.", "counter", reloads),
            ("rlur_policy_reload_failures_total", "Failed policy (re)loads.", "counter", failures),
        ):
            out += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {value}"]
        for name, (help_, samples) in (gauges or {}).items():
            out += [f"# HELP {name} {help_}", f"# TYPE {name} gauge"]
            out += [f"{name}{_labels(**lab) if lab else ''} {_num(v)}" for lab, v in samples]
        return "\n".join(out) + "\n"


class MetricsMiddleware:
    """ASGI middleware: count every HTTP request and time it until its last body byte is sent."""

    def __init__(self, app: Callable[..., Any], metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(
        self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.observe(
                self.metrics.endpoint_label(scope.get("path", "")), scope.get("method", ""), status,
                time.perf_counter() - t0,
            )
