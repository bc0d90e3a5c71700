"""``rlur train`` and ``rlur eval``."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from rlur.agents.rlur import HEURISTICS, RLURConfig
from rlur.cli import ABLATIONS, CliError, check_writable, non_negative_float, positive_int
from rlur.distributed.backend import add_backend_args, check_backend_args
from rlur.evaluation.report import print_metrics_table
from rlur.sim.world import WORLD_PRESETS, WorldConfig
from rlur.training.checkpoint import atomic_write_json
from rlur.training.loop import ALGOS, TrainConfig, Trainer

__all__ = ["build_train_config", "register"]



def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a policy (RLUR, RLUR-naive, TD3, CEM or a fixed baseline)",
                       description="Train one algorithm on the simulator and write a run directory.")
    p.add_argument("--algo", choices=ALGOS, default="rlur")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--world-seed", type=int, default=0)
    p.add_argument("--world-preset", choices=WORLD_PRESETS, default=None,
                   help="variant of the built-in world (default: the config file's world, else default)")
    p.add_argument("--world", default=None, help="a learned world (from rlur data fit) instead of the built-in one")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="batched environment steps (each advances every simulated user by one request); "
                        "default: the algorithm's converged budget")
    p.add_argument("--users", type=positive_int, default=None, help="simulated users stepping in parallel")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--config", help="JSON file with TrainConfig fields (command-line flags override it)")
    p.add_argument("--gamma", type=float, default=None,
                   help="discount at the session boundary (rlur, rlur-naive; naive default 0.9)")
    for flag in ABLATIONS:
        p.add_argument(f"--no-{flag}", action="store_true", help=f"RLUR ablation: switch off {flag}")
    p.add_argument("--candidate-explore", type=non_negative_float, default=None, metavar="SHARE",
                   help="rlur: share of served actions replaced by pure weightings (the action box's corners; "
                        "not in the paper; default 0; the rlur-candidates benchmark row uses 0.2)")
    p.add_argument("--candidate-pull", type=non_negative_float, default=None, metavar="WEIGHT",
                   help="rlur: weight of the actor's pull towards the pure weighting the critics value most "
                        "(not in the paper; default 0; the rlur-candidates row uses 1)")
    p.add_argument("--heuristic", choices=HEURISTICS, default=None,
                   help="rlur: the immediate critic's heuristic reward (default paper: watch time / 81.17 s plus "
                        "like, follow, comment, forward; hand-weighted: the first release's)")
    p.add_argument("--group-critics", action="store_true",
                   help="rlur: one retention and one immediate critic per activity group, as well as one actor "
                        "(open in the paper; default: shared critics; the rlur-group-critics row)")
    p.add_argument("--eval-every", type=positive_int, default=None, help="steps between evaluations")
    p.add_argument("--checkpoint-every", type=positive_int, default=None, help="steps between checkpoints")
    p.add_argument("--eval-users", type=positive_int, default=None)
    p.add_argument("--eval-days", type=positive_int, default=None)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--from-log", metavar="DIR", default=None,
                   help="train offline on the joined transitions of an `rlur live` run directory (rlur, rlur-naive, "
                        "td3): no environment steps; each step is updates on the logged replay buffer")
    p.add_argument("--from-minari", metavar="NAME", default=None,
                   help="as --from-log, on a local Minari dataset written by `rlur data export` (rlur.integrations."
                        "minari; nothing is downloaded)")
    p.add_argument("--log-arms", default="all", choices=("all", "control", "treatment"),
                   help="with --from-log: whose traffic to train on (default: all)")
    p.add_argument("--no-progress", action="store_true")
    add_backend_args(p, "the users stepped in this process")
    p.add_argument("--shards", type=positive_int, default=None,
                   help="with --backend ray: simulation shard actors (default: the cluster's CPUs)")
    p.add_argument("--block-users", type=positive_int, default=None,
                   help="with --backend ray: users per block, each its own seeded environment (default 256); "
                        "the run depends on it, not on --shards")
    p.add_argument("--sync-every", type=positive_int, default=None,
                   help="with --backend ray: environment steps per policy broadcast (default 1)")
    p.set_defaults(func=run_train)

    e = sub.add_parser("eval", help="evaluate a trained policy on held-out users",
                       description="Evaluate a run directory's policy (deterministic μ), or any policy, on fresh "
                                   "users (the same as rlur.evaluate in Python).")
    which = e.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", help="run directory (or checkpoint.pt)")
    which.add_argument("--policy", metavar="MODULE:FUNCTION",
                       help="a policy from outside: a function obs → action, or an object with act or predict "
                            "(e.g. an SB3 model), named as module:attribute or file.py:attribute; evaluated in "
                            "the default world unless --world")
    e.add_argument("--users", type=positive_int, default=4096)
    e.add_argument("--days", type=positive_int, default=14)
    e.add_argument("--seed", type=int, default=2_000_003, help="seed of the evaluation users")
    e.add_argument("--out", required=True, help="JSON output file")
    e.add_argument("--world", default=None, help="evaluate in this learned world (default: the run's world)")
    e.add_argument("--world-seed", type=int, default=None,
                   help="with --policy: the built-in world's seed (default 0; a checkpoint has its own world)")
    e.add_argument("--world-preset", choices=WORLD_PRESETS, default=None,
                   help="with --policy: the built-in world's variant (default: default)")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=run_eval)


def _read_config_file(name: str | None) -> dict:
    """The TrainConfig fields of a ``--config`` JSON file ({} without one)."""
    if not name:
        return {}
    path = Path(name)
    if not path.is_file():
        raise CliError(f"config file {path} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CliError(f"config file {path} is not valid JSON: {err}") from None


def build_train_config(args: argparse.Namespace) -> TrainConfig:
    """Merge defaults ← ``--config`` file ← flags into a :class:`TrainConfig`."""
    base = _read_config_file(args.config)
    base.update(algo=args.algo, seed=args.seed, world_seed=args.world_seed)
    if args.world_preset:
        base["world"] = WorldConfig.preset(args.world_preset, world_seed=args.world_seed).to_dict()
    if args.world:
        if not Path(args.world).exists():
            raise CliError(f"no learned world at {args.world} (build one with `rlur data fit`)")
        base["world_path"] = str(args.world)
    if args.steps is not None:
        base["steps"] = args.steps
    for name, key in (("users", "n_users"), ("eval_every", "eval_every"), ("eval_users", "eval_users"),
                      ("eval_days", "eval_days"), ("checkpoint_every", "checkpoint_every")):
        if getattr(args, name) is not None:
            base[key] = getattr(args, name)
    try:
        cfg = TrainConfig.from_dict(base)
    except (TypeError, ValueError) as err:
        raise CliError(f"bad configuration: {err}") from None
    cfg.rlur = _rlur_flags(args, cfg)
    return cfg


def _rlur_flags(args: argparse.Namespace, cfg: TrainConfig) -> RLURConfig:
    """RLUR's settings after the flags: ``--gamma``, the ablations and the candidate options."""
    rl = cfg.rlur
    if cfg.algo == "rlur-naive":  # the paper's naive rows; the components are switched off in make_learner
        rl = dataclasses.replace(rl, gamma=0.9)
    if args.gamma is not None:
        if not 0.0 <= args.gamma < 1.0:
            raise CliError(f"--gamma must be in [0, 1), got {args.gamma}")
        rl = dataclasses.replace(rl, gamma=args.gamma)
    for flag, field in ABLATIONS.items():
        if getattr(args, f"no_{flag.replace('-', '_')}"):
            rl = dataclasses.replace(rl, **{field: False})
    if args.heuristic is not None:
        if cfg.algo != "rlur":
            raise CliError(f"--heuristic is an option of --algo rlur, not {cfg.algo}")
        rl = dataclasses.replace(rl, heuristic=args.heuristic)
    if args.group_critics:
        if cfg.algo != "rlur":
            raise CliError(f"--group-critics is an option of --algo rlur, not {cfg.algo}")
        rl = dataclasses.replace(rl, group_critics=True)
    for name in ("candidate_explore", "candidate_pull"):
        if getattr(args, name) is not None:
            if cfg.algo != "rlur":
                raise CliError(f"--{name.replace('_', '-')} is an option of --algo rlur, not {cfg.algo}")
            try:
                rl = dataclasses.replace(rl, **{name: getattr(args, name)})
            except ValueError as err:
                raise CliError(str(err)) from None
    return rl


def run_train(args: argparse.Namespace) -> int:
    check_backend_args(args)
    if args.backend == "local":
        given = [f"--{n.replace('_', '-')}" for n in ("shards", "block_users", "sync_every") if getattr(args, n)]
        if given:
            raise CliError(f"{', '.join(given)} need --backend ray")
    cfg = build_train_config(args)
    out = check_writable(args.out, directory=True)
    if args.from_log and args.from_minari:
        raise CliError("--from-log and --from-minari are two sources; give one")
    if args.from_log or args.from_minari:
        return _run_train_from_log(args, cfg, out)
    if args.backend == "ray":
        return _run_train_ray(args, cfg, out)
    trainer = Trainer(cfg, out, progress=not args.no_progress)
    return _train(args, trainer, out)


def _run_train_from_log(args: argparse.Namespace, cfg: TrainConfig, out: Path) -> int:
    """``train --from-log DIR`` / ``--from-minari NAME``: the replay buffer is the logged transitions
    (rlur.training.offline)."""
    from rlur.training.offline import LoggedTransitions

    flag = "--from-log" if args.from_log else "--from-minari"
    if args.backend == "ray":
        raise CliError(f"{flag} trains in this process; drop --backend ray")
    if cfg.algo not in ("rlur", "rlur-naive", "td3"):
        raise CliError(f"{flag} trains off-policy agents (rlur, rlur-naive, td3), not {cfg.algo}")
    try:
        batch, source = _logged_batch(args)
    except (FileNotFoundError, ValueError, ImportError) as err:
        raise CliError(str(err)) from None
    print(f"{source}: {len(batch)} logged transitions ({int(batch.session_end.sum())} session ends)")
    trainer = Trainer(cfg, out, progress=not args.no_progress, collector=LoggedTransitions(batch, source))
    return _train(args, trainer, out)


def _logged_batch(args: argparse.Namespace):
    """The logged transitions of ``--from-log`` (a live run) or ``--from-minari`` (a Minari dataset), and their name."""
    if args.from_log:
        from rlur.live.dataset import read_logged_batch

        return read_logged_batch(args.from_log, args.log_arms), str(args.from_log)
    if args.log_arms != "all":
        raise ValueError("--log-arms is for --from-log; choose the arms when exporting (rlur data export --arms)")
    from rlur.integrations.minari import read_minari_batch

    return read_minari_batch(args.from_minari), f"minari:{args.from_minari}"


def _run_train_ray(args: argparse.Namespace, cfg: TrainConfig, out: Path) -> int:
    """``train --backend ray``: the learner here, the users' blocks on shard actors."""
    from rlur.distributed.backend import cluster_cpus, ray_session
    from rlur.distributed.collect import DEFAULT_TRAIN_BLOCK_USERS, ShardedCollector

    with ray_session(args.ray_address, args.ray_cpus):
        collector = ShardedCollector(args.shards or cluster_cpus(), args.block_users or DEFAULT_TRAIN_BLOCK_USERS,
                                     args.sync_every or 1)
        try:
            trainer = Trainer(cfg, out, progress=not args.no_progress, collector=collector)
            return _train(args, trainer, out)
        finally:
            collector.close()


def _train(args: argparse.Namespace, trainer: Trainer, out: Path) -> int:
    cfg = trainer.cfg
    if args.resume:
        if trainer.resume():
            print(f"resuming {out} at step {trainer.step}")
        else:
            print(f"nothing to resume in {out}; starting fresh")
    elif (out / "resume.pt").exists():
        raise CliError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    result = trainer.train()
    print_metrics_table(result, title=f"rlur train --algo {cfg.algo}: final evaluation ({cfg.eval_users} users, "
                                      f"{cfg.eval_days} days)")
    print(f"wrote {out}/config.json, metrics.csv, checkpoint.pt, eval.json")
    return 0


def _eval_world(args: argparse.Namespace) -> WorldConfig | str | None:
    """``rlur eval``'s world: a learned one (``--world``), a built-in one for ``--policy``, else the default."""
    if args.world_seed is None and args.world_preset is None:
        return args.world
    if args.checkpoint or args.world:
        raise CliError("--world-seed and --world-preset choose the built-in world for --policy; a checkpoint "
                       "has its own world, and --world is a learned one")
    return WorldConfig.preset(args.world_preset or "default", world_seed=args.world_seed or 0)


def run_eval(args: argparse.Namespace) -> int:
    from rlur.evaluation.api import evaluate, load_policy_spec

    out = check_writable(args.out)
    policy = args.checkpoint or load_policy_spec(args.policy)
    try:
        result = evaluate(policy, world=_eval_world(args), users=args.users, days=args.days, seed=args.seed,
                          progress=not args.no_progress)
    except TypeError as err:  # not a policy
        raise CliError(f"--policy {args.policy}: {err}") from None
    if args.policy:
        result["policy"] = args.policy
    print_metrics_table(result, title=f"rlur eval {args.checkpoint or args.policy}")
    atomic_write_json(result, out)
    print(f"wrote {out}")
    return 0
