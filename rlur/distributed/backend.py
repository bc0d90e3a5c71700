"""``--backend {local,ray}``, ``--ray-address`` and ``--ray-cpus``: join a Ray cluster or start a local one.

``--ray-address`` (or ``RAY_ADDRESS``) joins an existing cluster (``host:port``, ``ray://host:port`` or
``auto``); the address is checked, and the head probed, before Ray is asked, because Ray itself waits
minutes on an unreachable head. Without an address a local cluster starts with
``ray.init(num_cpus=…, include_dashboard=False)``. Workers run torch with one thread each (the
parallelism is the workers), through the job's runtime environment.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from rlur.cli import CliError, positive_int
from rlur.distributed import require_ray

__all__ = [
    "BACKENDS",
    "WORKER_ENV",
    "actor_slots",
    "add_backend_args",
    "as_finished",
    "check_backend_args",
    "cluster_cpus",
    "init_ray",
    "parse_address",
    "ray_session",
]

BACKENDS = ("local", "ray")
#: Environment of every Ray worker: one thread per torch op, the cluster's CPUs are the parallelism.
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
_PROBE_TIMEOUT_S = 5.0


def add_backend_args(parser: argparse.ArgumentParser, local_help: str) -> None:
    """The three backend flags, shared by ``benchmark``, ``simulate``, ``train`` and ``abtest``."""
    parser.add_argument("--backend", choices=BACKENDS, default="local",
                        help=f"where the work runs: local ({local_help}; the default) or ray (a Ray cluster; "
                             "needs pip install 'rlur[ray]')")
    parser.add_argument("--ray-address", default=None, metavar="ADDR",
                        help="join this Ray cluster (host:port, ray://host:port or auto; default: $RAY_ADDRESS, "
                             "else start a local one)")
    parser.add_argument("--ray-cpus", type=positive_int, default=None, metavar="N",
                        help="CPUs of the local Ray cluster started when no address is given (default: all cores)")


def check_backend_args(args: argparse.Namespace) -> None:
    """One-line errors for Ray flags given without ``--backend ray``, and for a malformed address."""
    if args.backend != "ray":
        given = [f for f, v in (("--ray-address", args.ray_address), ("--ray-cpus", args.ray_cpus)) if v]
        if given:
            raise CliError(f"{' and '.join(given)} need --backend ray")
        return
    require_ray()
    if args.ray_address:
        parse_address(args.ray_address)


def parse_address(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``host:port`` or ``ray://host:port``; ``None`` for ``auto``. ``CliError`` otherwise."""
    if address == "auto":
        return None
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in host:
        raise CliError(f"bad --ray-address {address!r}: expected host:port, ray://host:port or auto")
    return host.strip("[]"), int(port)


def _probe(host: str, port: int) -> None:
    try:
        socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S).close()
    except OSError as err:
        raise CliError(f"cannot reach the Ray cluster at {host}:{port}: {err.strerror or err}") from None


def init_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Join the cluster at ``address`` (or ``$RAY_ADDRESS``), else start a local one with ``num_cpus``.

    Returns whether this call connected (the caller then shuts Ray down); ``False`` when Ray was
    already initialised, e.g. by a test's cluster or a notebook, which is then used as it is.
    """
    ray = require_ray()
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    common: dict[str, Any] = {"runtime_env": {"env_vars": dict(WORKER_ENV)}, "log_to_driver": False,
                              "logging_level": logging.ERROR}
    if address is None:
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, **common)
        return True
    target = parse_address(address)
    if target is not None:
        _probe(*target)
    try:
        ray.init(address=address, **common)
    except Exception as err:  # whatever Ray raises (no cluster at `auto`, a client without ray[client], …)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CliError(f"cannot join the Ray cluster at {address}: {first}") from None
    return True


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[Any]:
    """``with ray_session(...) as ray:`` — Ray is up inside; shut down after if this call started it."""
    started = init_ray(address, num_cpus)
    ray = require_ray()
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def cluster_cpus() -> int:
    """CPUs of the connected cluster (at least 1)."""
    return max(1, int(require_ray().cluster_resources().get("CPU", 1)))


def actor_slots(requested: int) -> int:
    """How many one-CPU actors to start for ``requested`` shards: at most the cluster's CPUs.

    An actor holds its CPU for its lifetime, so actors beyond the cluster's CPUs would wait for ever
    while the others keep theirs; results do not depend on the shard count, only the speed does.
    """
    return max(1, min(requested, cluster_cpus()))


def as_finished(refs: Iterable[Any]) -> Iterator[Any]:
    """Yield Ray object refs one at a time, in the order they finish (results stream back as they come)."""
    ray = require_ray()
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        yield from done
