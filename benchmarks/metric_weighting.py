"""Who a retention metric listens to: the benchmark's headline metric against the agents' objective.

``avg_return_day`` (the paper's returning time, KuaiRand's definition) is a mean over the *return
gaps* in a calendar window: a user counts once per gap, so users who come back daily dominate it and
a user driven away for three weeks adds one gap. Every agent, on the other hand, is trained on the
MDP's reward, the returning time ``T`` of *every session*, with each user stepping the same number
of requests: there a user driven away adds a 20-day ``T`` per session and dominates. The two weigh
the activity groups very differently, so they can rank policies differently.

For each run of a ``rlur benchmark --out DIR`` directory (``DIR/runs/<row>/seed<N>``, or any
``rlur train`` run directories given with ``--runs``), and for reference fixed policies (uniform
weights, watch time only, the hand-written group rule), this evaluates the deterministic policy on
the same held-out users and reports

* ``calendar``: ``avg_return_day`` over ``--days`` days (the benchmark's protocol, gap-weighted);
* ``per_user``: ``avg_return_day_per_user`` on the same rollout (each user's mean gap, averaged);
* ``per_session``: the agents' objective: mean ``T`` over sessions that start and end within
  ``--steps`` batched requests, every user stepping every request (users of seed ``--seed`` + 1);

each also per activity group, then mean ± 95 % t-interval over seeds per row and a paired t-test of
``rlur`` against every other row.

    python benchmarks/metric_weighting.py runs/benchmark --out runs/metric_weighting.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from rlur.agents.fixed import weighting_action
from rlur.agents.policy import TablePolicy, load_policy
from rlur.evaluation.rollout import rollout
from rlur.evaluation.stats import mean_ci, paired_test
from rlur.sim.env import RetentionEnv
from rlur.sim.world import GROUPS, World, WorldConfig
from rlur.training.checkpoint import atomic_write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reward_snr import group_rule  # the hand-written group rule (rlur.agents.fixed.GROUP_RULE)

METRICS = ("calendar", "per_user", "per_session")


def reference_policies() -> dict[str, TablePolicy]:
    return {"uniform": TablePolicy(weighting_action()[None]),
            "watch-time-only": TablePolicy(weighting_action("watch_time")[None]), "group-rule": group_rule()}


def per_group(num: torch.Tensor, den: torch.Tensor, group: torch.Tensor) -> dict[str, float]:
    """``Σ num / Σ den`` within each activity group (NaN where a group has no data)."""
    out = {}
    for g, name in enumerate(GROUPS):
        d = den[group == g].sum()
        out[name] = float(num[group == g].sum() / d) if d > 0 else float("nan")
    return out


def per_session_return(world: World, policy, users: int, steps: int, seed: int) -> dict[str, Any]:
    """The agents' objective: mean ``T`` of the sessions that start and end within ``steps`` requests."""
    env = RetentionEnv(world, n_users=users, seed=seed)
    total, count = torch.zeros(users, dtype=torch.float64), torch.zeros(users, dtype=torch.float64)
    started = torch.zeros(users, dtype=torch.bool)  # a session began inside the window
    obs = env.observe()
    with torch.no_grad():
        for _ in range(steps):
            r = env.step(policy.act(obs, env.group, deterministic=True))
            ended = r.session_end & started
            total[ended] += r.return_time[ended].double()
            count[ended] += 1
            started |= r.session_end
            obs = r.obs
    return {"mean": float(total.sum() / count.sum()), "by_group": per_group(total, count, env.group)}


def calendar_returns(world: World, policy, users: int, days: int, seed: int) -> dict[str, Any]:
    """``avg_return_day`` and ``avg_return_day_per_user`` over ``days`` days, with their by-group split."""
    env = RetentionEnv(world, n_users=users, seed=seed)
    rec, _ = rollout(env, policy, days=days, deterministic=True)
    summary = rec.summary(n_boot=0)
    mean_gap, has_gap = rec.per_user_mean_gap()
    return {
        "calendar": {"mean": summary["avg_return_day"]["mean"],
                     "by_group": per_group(rec.gap_days, rec.gaps, env.group)},
        "per_user": {"mean": summary["avg_return_day_per_user"]["mean"],
                     "by_group": per_group(mean_gap, has_gap, env.group)},
    }


def evaluate(world: World, policy, args: argparse.Namespace) -> dict[str, Any]:
    out = calendar_returns(world, policy, args.users, args.days, args.seed)
    out["per_session"] = per_session_return(world, policy, args.users, args.steps, args.seed + 1)
    return out


def find_runs(args: argparse.Namespace) -> dict[str, list[Path]]:
    """Row name → run directories (seed order)."""
    if args.runs:  # each its own row, named like a benchmark's run: "<row>/seed<N>"
        return {f"{Path(r).parent.name}/{Path(r).name}": [Path(r)] for r in args.runs}
    root = Path(args.benchmark) / "runs"
    if not root.is_dir():
        raise SystemExit(f"{args.benchmark}: no runs/ directory (the --out directory of `rlur benchmark`)")
    rows = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        finished = [p for p in d.glob("seed*") if p.name[4:].isdigit() and (p / "checkpoint.pt").is_file()]
        if finished:
            rows[d.name] = sorted(finished, key=lambda p: int(p.name[4:]))
    return rows


def world_of(run: Path) -> World:
    cfg = json.loads((run / "config.json").read_text())
    if cfg.get("world_path"):
        raise SystemExit(f"{run}: trained on a learned world; this script compares on the built-in world")
    return World(WorldConfig.from_dict(cfg["world"]))


def summarise(per_seed: dict[str, list[dict]]) -> dict[str, Any]:
    summary = {row: {m: mean_ci([r[m]["mean"] for r in runs]) for m in METRICS} for row, runs in per_seed.items()}
    paired = {}
    if "rlur" in per_seed:
        base = per_seed["rlur"]
        for row, runs in per_seed.items():
            if row != "rlur" and len(runs) == len(base):
                paired[row] = {m: paired_test([r[m]["mean"] for r in base], [r[m]["mean"] for r in runs])
                               for m in METRICS}
    return {"summary": summary, "paired_vs_rlur": paired}


def markdown(result: dict[str, Any]) -> str:
    head = ("| policy | seeds | calendar avg return day ↓ | per-user ↓ | per-session T (agents' objective) ↓ | "
            "per-session T by group (high / middle / low / new) | RLUR − row: calendar, per-user, per-session (p) |")
    lines = [head, "|" + "---|" * 7]
    fmt = lambda c: f"{c['mean']:.3f}" if c["n"] < 2 else f"{c['mean']:.3f} ± {c['ci_high'] - c['mean']:.3f}"  # noqa: E731
    for row, s in result["summary"].items():
        runs = result["per_seed"][row]
        by = [sum(r["per_session"]["by_group"][g] for r in runs) / len(runs) for g in GROUPS]
        p = result["paired_vs_rlur"].get(row)
        pair = "—" if p is None else ", ".join(f"{p[m]['diff']:+.3f} ({p[m]['p_value']:.2g})" for m in METRICS)
        lines.append(f"| {row} | {len(runs)} | {fmt(s['calendar'])} | {fmt(s['per_user'])} | {fmt(s['per_session'])} | "
                     f"{' / '.join(f'{v:.2f}' for v in by)} | {pair} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("benchmark", nargs="?", help="a `rlur benchmark --out` directory")
    ap.add_argument("--runs", nargs="*", help="run directories instead (each is its own row)")
    ap.add_argument("--users", type=int, default=4096)
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--steps", type=int, default=200, help="requests per user for the per-session objective")
    ap.add_argument("--seed", type=int, default=7_000_001, help="held-out users (the benchmark's evaluation seed)")
    ap.add_argument("--no-reference", action="store_true", help="skip the fixed reference policies")
    ap.add_argument("--out", help="write the result as JSON (and Markdown next to it)")
    args = ap.parse_args(argv)
    if not args.benchmark and not args.runs:
        ap.error("give a benchmark directory or --runs")
    if min(args.users, args.days, args.steps) < 1:
        ap.error("--users, --days and --steps must be positive")
    torch.set_num_threads(1)
    runs = find_runs(args)
    if not runs:
        raise SystemExit("no finished runs (checkpoint.pt) found")
    world = world_of(next(iter(runs.values()))[0])
    per_seed: dict[str, list[dict]] = {}
    if not args.no_reference:
        for name, policy in reference_policies().items():
            per_seed[name] = [evaluate(world, policy, args)]
    jobs = [(row, run) for row, paths in runs.items() for run in paths]
    for row, run in tqdm(jobs, desc="runs", disable=not sys.stderr.isatty()):
        if world_of(run).config.to_dict() != world.config.to_dict():
            raise SystemExit(f"{run}: a different world from the other runs")
        policy, _ = load_policy(run)
        per_seed.setdefault(row, []).append({"run": f"{run.parent.name}/{run.name}", **evaluate(world, policy, args)})
    config = {k: getattr(args, k) for k in ("users", "days", "steps", "seed")}  # no paths: results travel
    config["world"] = world.config.to_dict()
    result = {"config": config, **summarise(per_seed), "per_seed": per_seed}
    table = markdown(result)
    print(table)
    if args.out:
        atomic_write_json(result, args.out)
        Path(args.out).with_suffix(".md").write_text(table)
    return result


if __name__ == "__main__":
    main()
