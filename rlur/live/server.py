"""How the rehearsal's simulated users reach the ranking service: in process, or over loopback HTTP.

Both implement :class:`PolicyServer`: for a batch of one arm's requests they return the served action,
μ_b, σ_b, log-probability and the version that served each request.

* :class:`InProcessServer` holds two :class:`~rlur.serving.ranker.Ranker` objects loaded with
  ``Ranker.from_checkpoint`` (the service's loader and checks): the control arm's frozen starting
  policy, and the treatment's, hot-reloaded whenever ``current.pt`` changes (the service's watch rule:
  mtime, size, inode). Fast: no serialisation.
* :class:`HttpServer` starts two ``rlur serve`` processes on loopback ports (the treatment's with
  ``--watch``: the service's own hot reload) and calls ``POST /v1/rank:batch``.

The simulator's candidate stage and fusion ranking then run with the served action (the ranking
function is the service's, ``rlur.sim.ranking``). Over HTTP each request therefore carries six
placeholder candidates: the service's slate is not used, only its action and its log record.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np
import torch

from rlur.live.trainer import version_number
from rlur.serving.ranker import Ranker
from rlur.sim.world import GROUPS, SCORE_NAMES

__all__ = ["HttpServer", "InProcessServer", "PolicyServer", "Served", "make_server"]

CONTROL, TREATMENT = 0, 1


@dataclass
class Served:
    """What served n requests of one arm."""

    action: torch.Tensor
    mu: torch.Tensor
    sigma: torch.Tensor
    logp: torch.Tensor
    version: np.ndarray
    """``(n,)`` int64: the policy version that served each request."""


class PolicyServer(Protocol):
    def serve(self, arm: int, obs: torch.Tensor, group: torch.Tensor, request_ids: np.ndarray,
              user_ids: np.ndarray) -> Served:
        ...

    def version(self, arm: int) -> int:
        """The version the arm serves now."""
        ...

    def close(self) -> None:
        ...


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class InProcessServer:
    """Control: frozen ``control`` checkpoint. Treatment: ``current``, reloaded when the file changes."""

    def __init__(self, control: str | Path, current: str | Path, seed: int = 0) -> None:
        self.current = Path(current)
        self.rankers = [Ranker.from_checkpoint(control), Ranker.from_checkpoint(current)]
        self._stamp = _stamp(self.current)
        self.generators = [torch.Generator().manual_seed(seed * 1_000_003 + 7919 * (a + 1)) for a in range(2)]
        self.reloads = 0
        self.reload_failures = 0

    def _maybe_reload(self) -> None:
        stamp = _stamp(self.current)
        if stamp is None or stamp == self._stamp:
            return
        try:
            self.rankers[TREATMENT] = Ranker.from_checkpoint(self.current)
            self.reloads += 1
        except (ValueError, OSError):  # keep serving the old version (the service's rule)
            self.reload_failures += 1
        self._stamp = stamp

    def serve(self, arm: int, obs: torch.Tensor, group: torch.Tensor, request_ids: np.ndarray,
              user_ids: np.ndarray) -> Served:
        if arm == TREATMENT:
            self._maybe_reload()
        ranker = self.rankers[arm]  # read once: the whole batch is served by one version
        out = ranker.policy.sample(obs, group, generator=self.generators[arm])
        return Served(out["action"], out["mu"], out["std"], out["log_prob"],
                      np.full(len(obs), version_number(ranker.version), dtype=np.int64))

    def version(self, arm: int) -> int:
        if arm == TREATMENT:
            self._maybe_reload()
        return version_number(self.rankers[arm].version)

    def close(self) -> None:
        pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Endpoint:
    """One ``rlur serve`` process and a keep-alive connection to it."""

    def __init__(self, checkpoint: Path, watch: bool, seed: int, log_file: Path) -> None:
        self.port = free_port()
        cmd = [sys.executable, "-m", "rlur", "serve", "--checkpoint", str(checkpoint), "--host", "127.0.0.1",
               "--port", str(self.port), "--no-log", "--seed", str(seed), "--log-level", "error"]
        if watch:
            cmd += ["--watch", "--watch-interval", "0.2"]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.log_handle = log_file.open("ab")
        self.proc = subprocess.Popen(cmd, stdout=self.log_handle, stderr=subprocess.STDOUT, env=env)
        self.conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        return self.conn

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        for attempt in range(2):
            conn = self._connection()
            try:
                conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                return resp.status, resp.read()
            except (ConnectionError, http.client.HTTPException, OSError):
                conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def wait_ready(self, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the ranking service on port {self.port} exited with code {self.proc.returncode}")
            try:
                status, body = self.request("GET", "/readyz")
                if status == 200:
                    return json.loads(body)
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the ranking service on port {self.port} was not ready after {timeout} s")
            time.sleep(0.1)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_handle.close()


class HttpServer:
    """Both arms behind ``rlur serve`` on loopback; the treatment's service watches ``current``."""

    _PLACEHOLDER_IDS: ClassVar[list[int]] = list(range(6))
    _PLACEHOLDER_SCORES = np.zeros((6, len(SCORE_NAMES)), dtype="<f4").tobytes().hex()

    def __init__(self, control: str | Path, current: str | Path, seed: int, log_dir: str | Path,
                 max_batch: int = 1024) -> None:
        log_dir = Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.max_batch = max_batch
        self.endpoints: list[_Endpoint] = []
        try:
            for arm, (path, watch) in enumerate(((Path(control), False), (Path(current), True))):
                self.endpoints.append(_Endpoint(path, watch, seed * 1_000_003 + 7919 * (arm + 1),
                                                log_dir / f"serve-{('control', 'treatment')[arm]}.log"))
            self.info = [e.wait_ready() for e in self.endpoints]
        except BaseException:
            self.close()
            raise
        self._versions = [version_number(i["policy_version"]) for i in self.info]

    def serve(self, arm: int, obs: torch.Tensor, group: torch.Tensor, request_ids: np.ndarray,
              user_ids: np.ndarray) -> Served:
        n = len(obs)
        states, groups = obs.tolist(), group.tolist()
        rids, uids = [str(int(r)) for r in request_ids], [int(u) for u in user_ids]
        out: dict[str, list] = {"action": [], "mu": [], "sigma": [], "log_prob": [], "version": []}
        for s in range(0, n, self.max_batch):
            body = json.dumps({"requests": [
                {"state": states[i], "group": GROUPS[groups[i]], "candidate_ids": self._PLACEHOLDER_IDS,
                 "scores_hex": self._PLACEHOLDER_SCORES, "request_id": rids[i], "user_id": uids[i]}
                for i in range(s, min(s + self.max_batch, n))]}).encode()
            status, data = self.endpoints[arm].request("POST", "/v1/rank:batch", body)
            if status != 200:
                raise RuntimeError(f"the ranking service answered {status}: {data[:200]!r}")
            results = json.loads(data)["results"]
            for key in ("action", "mu", "sigma", "log_prob"):
                out[key].extend(r[key] for r in results)
            out["version"].extend(version_number(r["policy_version"]) for r in results)
        f32 = lambda key: torch.tensor(out[key], dtype=torch.float32)  # noqa: E731
        version = np.asarray(out["version"], dtype=np.int64)
        if n:
            self._versions[arm] = int(version[-1])
        return Served(f32("action"), f32("mu"), f32("sigma"), f32("log_prob"), version)

    def version(self, arm: int) -> int:
        return self._versions[arm]

    def close(self) -> None:
        for e in self.endpoints:
            e.close()


def make_server(kind: str, control: Path, current: Path, seed: int, log_dir: Path) -> PolicyServer:
    if kind == "inprocess":
        return InProcessServer(control, current, seed)
    if kind == "http":
        return HttpServer(control, current, seed, log_dir)
    raise ValueError(f"unknown server {kind!r}; choose inprocess or http")
