"""``rlur serve`` (the ranking API) and ``rlur export`` (TorchScript / ONNX policy files)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from rlur.cli import CliError, check_writable, positive_float, positive_int

if TYPE_CHECKING:
    import uvicorn

__all__ = ["register", "run_export", "run_serve"]


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number in 0..65535, got {value}")
    return value


def _max_body(text: str) -> tuple[str, int]:
    """``ENDPOINT=SIZE`` (ENDPOINT ``rank`` or ``batch``) → (endpoint path, bytes)."""
    from rlur.serving.bodies import BODY_ENDPOINTS, parse_size

    name, sep, size = text.partition("=")
    if not sep or name not in BODY_ENDPOINTS:
        raise argparse.ArgumentTypeError(f"expected rank=SIZE or batch=SIZE, got {text!r}")
    try:
        return BODY_ENDPOINTS[name], parse_size(size)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback address (an unresolved name counts as exposed)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="serve a checkpoint's policy over HTTP (FastAPI + uvicorn)",
        description="Serve POST /v1/rank and /v1/rank:batch with the policy in DIR/checkpoint.pt, logging "
        "every served request (state, action, μ, σ, log-prob, shown ids) for training. See docs/serving.md.",
    )
    add = p.add_argument
    add("--checkpoint", required=True, metavar="DIR", help="run directory (or checkpoint.pt file)")
    add("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1)")
    add("--port", type=_port, default=8000, help="TCP port (default: 8000; 0 picks a free one)")
    add("--log", metavar="PATH",
        help="request log: SQLite, or JSON Lines if PATH ends in .jsonl (default: DIR/requests.sqlite)")
    add("--no-log", action="store_true", help="do not write a request log")
    add("--log-candidates", action="store_true", help="also log every request's candidate ids")
    add("--watch", action="store_true", help="reload when the checkpoint file changes (polls its mtime)")
    add("--watch-interval", type=positive_float, default=2.0, metavar="S",
        help="seconds between checkpoint polls with --watch (default: 2)")
    add("--max-candidates", type=positive_int, default=1000, help="most candidates per request (1000)")
    add("--max-batch", type=positive_int, default=1024, help="most requests per /v1/rank:batch (1024)")
    add("--max-body", type=_max_body, action="append", default=[], metavar="ENDPOINT=SIZE",
        help="body cap of rank (/v1/rank) or batch (/v1/rank:batch), e.g. batch=128MiB; repeatable "
        "(defaults: rank the longest valid request, 384 KiB at 1000 candidates; batch 64 MiB)")
    add("--admin-token", default=os.environ.get("RLUR_ADMIN_TOKEN"),
        help="require this X-Admin-Token on POST /admin/reload (default: $RLUR_ADMIN_TOKEN, else none; "
        "required with a non-loopback --host)")
    add("--insecure-admin", action="store_true",
        help="allow a non-loopback --host without --admin-token (anyone who reaches the port can reload)")
    add("--seed", type=int, help="seed of the server's action noise for unseeded requests")
    add("--workers", type=positive_int, default=1,
        help="server processes sharing the port (default: 1). With more than one, each worker watches "
        "the checkpoint (as --watch) and appends to the same SQLite request log; see docs/serving.md")
    add("--torch-threads", type=positive_int, default=1,
        help="torch intra-op threads (default: 1; requests are small, threads only add overhead)")
    add("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"),
        help="server log level (default: warning)")
    add("--access-log", action="store_true", help="log every HTTP request (slow)")
    p.set_defaults(func=run_serve)

    e = sub.add_parser(
        "export", help="export a checkpoint's policy and scorer to TorchScript or ONNX",
        description="Write a standalone policy (obs, group → mu, sigma) and scorer (scores, action, valid → "
        "top-6 positions). TorchScript: one file with forward() and rank(). ONNX (needs the 'onnx' extra): "
        "FILE and FILE's stem + .scorer.onnx. Both also write FILE.meta.json.",
    )
    e.add_argument("--checkpoint", required=True, metavar="DIR", help="run directory (or checkpoint.pt file)")
    e.add_argument("--format", required=True, choices=("torchscript", "onnx"), help="output format")
    e.add_argument("--out", required=True, metavar="FILE", help="output file")
    e.set_defaults(func=run_export)


def _checkpoint(path: str) -> Path:
    from rlur.serving.ranker import checkpoint_file

    file = checkpoint_file(path)
    if not file.exists():
        raise CliError(f"no checkpoint at {file}")
    return file


def run_serve(args: argparse.Namespace) -> int:
    import torch
    import uvicorn

    from rlur.serving.app import CONFIG_ENV, ServingConfig, config_to_env, create_app
    from rlur.serving.ranker import Ranker

    _check_admin(args)
    _checkpoint(args.checkpoint)
    Ranker.from_checkpoint(args.checkpoint)  # fail now, with a one-line error, on a bad checkpoint
    config = ServingConfig(
        checkpoint=args.checkpoint, log_path=args.log, request_log=not args.no_log,
        log_candidates=args.log_candidates, max_candidates=args.max_candidates, max_batch=args.max_batch,
        # Several workers: /admin/reload reaches one of them, so every worker also watches the file.
        watch=args.watch or args.workers > 1, watch_interval=args.watch_interval, admin_token=args.admin_token,
        seed=args.seed, workers=args.workers, max_body=dict(args.max_body) or None,
    )
    log_path = config.resolved_log_path()
    if log_path is not None:
        check_writable(log_path)
        if args.workers > 1 and log_path.suffix == ".jsonl":
            raise CliError("--workers > 1 needs a SQLite request log (several processes cannot share a .jsonl)")
    if args.port:
        with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as s:
            try:
                s.bind((args.host, args.port))
            except OSError as err:
                raise CliError(f"cannot listen on {args.host}:{args.port}: {err.strerror or err}") from None
    torch.set_num_threads(args.torch_threads)
    common = dict(host=args.host, port=args.port, log_level=args.log_level, access_log=args.access_log,
                  timeout_graceful_shutdown=30)
    if args.workers == 1:
        uvicorn.run(create_app(config), **common)
    else:  # uvicorn's process supervisor: each worker builds its app from the config in the environment
        os.environ[CONFIG_ENV] = config_to_env(config, args.torch_threads)
        _run_workers(uvicorn.Config("rlur.serving.app:app_from_env", factory=True, workers=args.workers, **common))
    return 0


def _check_admin(args: argparse.Namespace) -> None:
    """Refuse an empty token, and a non-loopback bind without a token unless ``--insecure-admin``."""
    if args.admin_token is not None and not args.admin_token:
        raise CliError("--admin-token (or $RLUR_ADMIN_TOKEN) is empty")
    if args.admin_token is None and not args.insecure_admin and not is_loopback(args.host):
        raise CliError(
            f"refusing to listen on {args.host} with POST /admin/reload open to anyone: give --admin-token "
            "(or $RLUR_ADMIN_TOKEN), or --insecure-admin to accept that"
        )


def _run_workers(config: uvicorn.Config) -> None:
    """What ``uvicorn.run(..., workers=N)`` does, but with the listening socket created as
    ``IPPROTO_TCP``: uvicorn's own leaves ``proto`` at 0, so asyncio never sets ``TCP_NODELAY`` on the
    accepted connections and every keep-alive request after the first waits ~40 ms on a delayed ACK
    (uvicorn issue #3149)."""
    import inspect

    from uvicorn import Server
    from uvicorn.supervisors import Multiprocess

    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((config.host, config.port))
    sock.set_inheritable(True)
    host, port = sock.getsockname()[:2]
    print(f"rlur serve: {config.workers} workers on http://{host}:{port}", flush=True)
    extra = {"target": Server(config).run} if "target" in inspect.signature(Multiprocess).parameters else {}
    try:
        Multiprocess(config, sockets=[sock], **extra).run()
    except KeyboardInterrupt:
        pass


def run_export(args: argparse.Namespace) -> int:
    from rlur.serving.export import export_policy

    _checkpoint(args.checkpoint)
    out = check_writable(args.out)
    for f in export_policy(args.checkpoint, args.format, out):
        print(f"wrote {f}")
    return 0
