"""Benchmark of the ranking API over loopback: latency and throughput of /v1/rank and /v1/rank:batch.

The server runs in its own process (``python -m rlur.serving serve``, request log on, as deployed);
this process is the client: keep-alive HTTP/1.1 over raw sockets from threads, with pre-encoded bodies,
so that the client costs as little CPU as possible (both share the machine's cores).

Reported per request body form (``objects``: a JSON object per candidate with named scores;
``columnar``: ids + a C × k list of lists; ``hex``: ids + packed float32 scores):

* ``/v1/rank`` p50 / p99 latency and throughput at each concurrency;
* ``/v1/rank:batch`` ranked requests per second (batch size × batches per second);
* an in-process breakdown (µs per request) of JSON decoding + validation and of the ranker, measured
  before the server starts: what dominates the server's cost.

Usage: ``python benchmarks/serving_bench.py [--candidates 200] [--duration 3] [--workers 1] [--out bench.json]``.

``--compare-with DIR`` measures this checkout against another one (e.g. ``git worktree add DIR
<commit>``) side by side instead: both servers run at once, ``/v1/rank`` requests alternate between
them (A B B A …) on one client thread at concurrency 1, and the batch endpoint is loaded in
alternating two-second slices. Load from other jobs then falls on both alike; the ratios are the result.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rlur.serving.testing import random_request, write_demo_checkpoint  # noqa: E402

FORMS = ("objects", "columnar", "hex")


class Conn:
    """One keep-alive HTTP/1.1 connection; ``post`` returns ``(status, body)``."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def send(self, raw: bytes) -> tuple[int, bytes]:
        self.sock.sendall(raw)
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self.buf) < length:
            self._fill()
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, body

    def close(self) -> None:
        self.sock.close()


def http_request(path: str, body: bytes, host: str = "127.0.0.1") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def load(
    port: int, requests: list[bytes], concurrency: int, duration: float, warmup: float = 0.5,
) -> dict[str, Any]:
    """Send ``requests`` round-robin from ``concurrency`` threads for ``duration`` s (after a warmup)."""
    start = time.perf_counter()
    t_measure, t_end = start + warmup, start + warmup + duration
    lat: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency

    def worker(i: int) -> None:
        conn = Conn("127.0.0.1", port)
        j = i
        try:
            while True:
                t0 = time.perf_counter()
                if t0 >= t_end:
                    break
                status, _ = conn.send(requests[j % len(requests)])
                t1 = time.perf_counter()
                j += concurrency
                if t0 >= t_measure:
                    if status == 200:
                        lat[i].append(t1 - t0)
                    else:
                        errors[i] += 1
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    all_lat = np.array([x for per in lat for x in per])
    n = len(all_lat)
    return {
        "concurrency": concurrency, "requests": n, "errors": sum(errors),
        "throughput_rps": n / duration,
        "p50_ms": float(np.percentile(all_lat, 50) * 1e3) if n else None,
        "p99_ms": float(np.percentile(all_lat, 99) * 1e3) if n else None,
    }


def breakdown(n_candidates: int, batch: int) -> dict[str, float]:
    """In-process µs per request: JSON decode, pydantic validation per form, ranker (B=1 and B=batch)."""
    import pydantic_core
    import torch

    from rlur.serving.ranker import Ranker
    from rlur.serving.schemas import RankBatchRequest, RankRequest

    torch.set_num_threads(1)
    rng = np.random.default_rng(1)
    out: dict[str, float] = {}

    def timeit(f, n: int) -> float:
        f()
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        return (time.perf_counter() - t0) / n * 1e6

    for form in FORMS:
        body = json.dumps(random_request(rng, n_candidates, form=form)).encode()
        out[f"bytes_{form}"] = len(body)
        out[f"json.loads_{form}_us"] = timeit(lambda b=body: json.loads(b), 30)
        out[f"pydantic_core.from_json_{form}_us"] = timeit(lambda b=body: pydantic_core.from_json(b), 30)
        out[f"validate_{form}_us"] = timeit(lambda b=body: RankRequest.model_validate_json(b), 30)
    reqs = [random_request(rng, n_candidates, form="hex") for _ in range(batch)]
    bb = json.dumps({"requests": reqs}).encode()
    per_batch = timeit(lambda: RankBatchRequest.model_validate_json(bb), 5)
    out["validate_batch_hex_us_per_request"] = per_batch / len(reqs)
    with tempfile.TemporaryDirectory() as d:
        write_demo_checkpoint(d)
        ranker = Ranker.from_checkpoint(d)
    inputs = [r.to_input() for r in RankBatchRequest.model_validate_json(bb).requests]
    g = torch.Generator().manual_seed(0)
    out["ranker_B1_us"] = timeit(lambda: ranker.rank(inputs[:1], g), 200)
    out[f"ranker_B{batch}_us_per_request"] = timeit(lambda: ranker.rank(inputs, g), 20) / batch
    return out


def _encode(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    checkpoint: Path, port: int, log: Path, extra: list[str] | None = None, repo: Path = REPO,
) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "rlur.serving", "serve", "--checkpoint", str(checkpoint), "--port", str(port),
        "--log", str(log), "--log-level", "error", *(extra or []),
    ]
    proc = subprocess.Popen(cmd, cwd=repo)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not become ready in 60 s")


def paired_latency(ports: tuple[int, int], requests: list[bytes], duration: float) -> list[dict[str, Any]]:
    """Concurrency 1 on both servers from one thread, alternating A B B A: p50/p99 per server."""
    conns = [Conn("127.0.0.1", port) for port in ports]
    lat: list[list[float]] = [[], []]
    try:
        for c in conns:  # warm-up
            for raw in requests[:8]:
                c.send(raw)
        t_end, j = time.perf_counter() + duration, 0
        while time.perf_counter() < t_end:
            raw = requests[j % len(requests)]
            for side in ((0, 1) if j % 2 == 0 else (1, 0)):
                t0 = time.perf_counter()
                status, _ = conns[side].send(raw)
                if status == 200:
                    lat[side].append(time.perf_counter() - t0)
            j += 1
    finally:
        for c in conns:
            c.close()
    return [{"requests": len(x), "p50_ms": float(np.percentile(x, 50) * 1e3),
             "p99_ms": float(np.percentile(x, 99) * 1e3)} for x in lat]


def paired_throughput(
    ports: tuple[int, int], requests: list[bytes], concurrency: int, duration: float, slice_s: float = 2.0,
) -> list[float]:
    """Calls per second on each server, loading them in alternating slices of ``slice_s`` seconds."""
    done, spent = [0, 0], [0.0, 0.0]
    for k in range(max(1, round(duration / slice_s))):
        for side in ((0, 1) if k % 2 == 0 else (1, 0)):
            r = load(ports[side], requests, concurrency, slice_s, warmup=0.2)
            done[side] += r["requests"]
            spent[side] += slice_s
    return [done[i] / spent[i] for i in range(2)]


def compare(args: argparse.Namespace, other: Path, forms: list[str]) -> dict[str, Any]:
    """This checkout (``new``) against ``other`` (``base``), side by side; see the module docstring."""
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {"base": str(other), "rank": [], "batch": []}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(args.checkpoint) if args.checkpoint else Path(tmp)
        if not args.checkpoint:
            write_demo_checkpoint(ckpt)
        ports = (free_port(), free_port())
        procs = [start_server(ckpt, ports[0], Path(tmp) / "new.sqlite", repo=REPO),
                 start_server(ckpt, ports[1], Path(tmp) / "base.sqlite", repo=other)]
        try:
            for form in forms:
                bodies = [http_request("/v1/rank", _encode(random_request(rng, args.candidates, form=form)))
                          for _ in range(64)]
                new, base = paired_latency(ports, bodies, args.duration)
                out["rank"].append({"form": form, "new": new, "base": base})
                print(f"/v1/rank       {form:9s} c=1  p50 new {new['p50_ms']:6.2f} / base {base['p50_ms']:6.2f} ms"
                      f"  p99 new {new['p99_ms']:6.2f} / base {base['p99_ms']:6.2f} ms", flush=True)
            for form in forms:
                batches = [http_request("/v1/rank:batch", json.dumps({"requests": [
                    random_request(rng, args.candidates, form=form) for _ in range(args.batch_size)
                ]}).encode()) for _ in range(4)]
                new, base = (x * args.batch_size for x in paired_throughput(
                    ports, batches, args.batch_concurrency, args.duration))
                out["batch"].append({"form": form, "new_ranked_rps": new, "base_ranked_rps": base})
                print(f"/v1/rank:batch {form:9s} B={args.batch_size} c={args.batch_concurrency}: new {new:8.0f} / "
                      f"base {base:8.0f} ranked req/s (ratio {new / base:.2f})", flush=True)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(30)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", help="run directory (default: a random-init demo checkpoint)")
    ap.add_argument("--candidates", type=int, default=200)
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--forms", default=",".join(FORMS))
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--batch-concurrency", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1, help="server worker processes (rlur serve --workers)")
    ap.add_argument("--out", help="write the results as JSON")
    ap.add_argument("--compare-with", metavar="DIR",
                    help="another checkout of this repository to measure side by side against (see above)")
    args = ap.parse_args()
    forms = args.forms.split(",")
    levels = [int(c) for c in args.concurrency.split(",")]
    if args.compare_with:
        result = {"load_avg_before": os.getloadavg(), **compare(args, Path(args.compare_with), forms),
                  "load_avg_after": os.getloadavg()}
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        return 0

    result: dict[str, Any] = {
        "candidates": args.candidates, "k": 8, "cpus": os.cpu_count(), "duration_s": args.duration,
        "load_avg_before": os.getloadavg(), "workers": args.workers,
    }
    print("in-process breakdown (µs per request) ...", flush=True)
    result["breakdown"] = breakdown(args.candidates, args.batch_size)
    for k, v in result["breakdown"].items():
        print(f"  {k:42s} {v:10.1f}")

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(args.checkpoint) if args.checkpoint else Path(tmp)
        if not args.checkpoint:
            write_demo_checkpoint(ckpt)
        port = free_port()
        proc = start_server(ckpt, port, Path(tmp) / "requests.sqlite", ["--workers", str(args.workers)])
        try:
            result["rank"] = []
            for form in forms:
                bodies = [
                    http_request("/v1/rank", _encode(random_request(rng, args.candidates, form=form)))
                    for _ in range(64)
                ]
                for c in levels:
                    r = load(port, bodies, c, args.duration)
                    r["form"] = form
                    result["rank"].append(r)
                    print(f"/v1/rank       {form:9s} c={c:<3d} {r['throughput_rps']:8.0f} req/s  "
                          f"p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  errors {r['errors']}",
                          flush=True)
            result["batch"] = []
            for form in forms:
                batches = [
                    http_request("/v1/rank:batch", json.dumps({"requests": [
                        random_request(rng, args.candidates, form=form) for _ in range(args.batch_size)
                    ]}).encode())
                    for _ in range(4)
                ]
                r = load(port, batches, args.batch_concurrency, args.duration)
                r.update(form=form, batch_size=args.batch_size,
                         ranked_rps=r["throughput_rps"] * args.batch_size)
                result["batch"].append(r)
                print(f"/v1/rank:batch {form:9s} B={args.batch_size} c={args.batch_concurrency}: "
                      f"{r['ranked_rps']:8.0f} ranked req/s  (p50 {r['p50_ms']:.1f} ms per call, "
                      f"errors {r['errors']})", flush=True)
        finally:
            proc.terminate()
            proc.wait(30)
    result["load_avg_after"] = os.getloadavg()
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
