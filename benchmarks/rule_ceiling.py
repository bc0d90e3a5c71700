"""How much of a world's room to learn a benchmark's rows find, measured against hand-written rules.

Evaluates fixed weightings and hand-written state rules exactly as ``rlur benchmark`` evaluates a
trained policy (the same held-out users, days and evaluation seed, the same metrics). Given a
benchmark directory, it takes the world and the protocol from its ``results.json`` and reports, for
each of its rows, the share of the room found: ``(CEM − row) / (CEM − best rule)`` on the average
return day, per training seed (mean and 95 % t-interval over seeds), and the same on day-1 retention.
CEM is the best *fixed* weighting a search finds, so the share says how much of what a state rule adds
to it a learner has found: 0 is no better than CEM, 1 is as good as the best rule here.

The rules (``rlur.agents.fixed``): uniform weights, watch time or long views for everyone, the group
rule (one weighting per activity group) and the ``weary`` world's fatigue rule (heavy users ranked by
watch time for the first 3 requests of the day's first session, by long views after that and through
every same-day reopen), the same fatigue rule with middle users ranked by long views throughout, and
the default world's rule, ``binge_rule`` (middle users ranked by watch time for the first 5 requests
of the day's first session, by their group weighting after that and through every same-day reopen).
A rule is a lower bound on what a state-dependent policy can reach, not the optimum.

    python benchmarks/rule_ceiling.py --benchmark docs/benchmark/weary --out ceiling.json
    python benchmarks/rule_ceiling.py --world-preset default --users 1024 --days 7
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rlur.agents.fixed import (
    GROUP_RULE,
    WEARY_TIRED_RULE,
    FatigueSwitchRule,
    FixedPolicy,
    binge_rule,
    group_rule_actions,
    weary_rule,
    weighting_action,
)
from rlur.agents.policy import TablePolicy
from rlur.cli import positive_int
from rlur.evaluation.stats import mean_ci
from rlur.sim.world import WORLD_PRESETS, World, WorldConfig
from rlur.training.checkpoint import atomic_write_json
from rlur.training.loop import evaluate_policy

#: The hand-written policies evaluated, by name.
RULES: dict[str, Callable[[], Any]] = {
    "uniform": lambda: FixedPolicy(weighting_action()),
    "watch_time": lambda: FixedPolicy(weighting_action("watch_time")),
    "long_view": lambda: FixedPolicy(weighting_action("long_view")),
    "group_rule": lambda: TablePolicy(group_rule_actions(GROUP_RULE)),
    "fatigue_rule": weary_rule,
    # The same with middle users ranked by long views alone, fresh or tired: in `weary` this is about
    # 0.03 days better than the fatigue rule on worlds 0–2 (docs/critic.md, section 9).
    "fatigue_rule_middle_lv": lambda: FatigueSwitchRule(
        {**GROUP_RULE, "middle": ("long_view",)}, {**WEARY_TIRED_RULE, "middle": ("long_view",)},
        switch_after=3, reopen_tired=True),
    "binge_rule": binge_rule,
}
METRICS = ("avg_return_day", "avg_return_day_per_user", "day1_retention", "watch_time_per_request")


def evaluate_rules(world: World, users: int, days: int, seed: int) -> dict[str, dict[str, float]]:
    """Every rule's metrics (the mean of each) on ``users`` held-out users of ``seed`` over ``days``."""
    out = {}
    for name, make in RULES.items():
        summary = evaluate_policy(make(), world, users, days, seed)
        out[name] = {m: float(summary[m]["mean"]) for m in METRICS}
    return out


def best_rule(rules: dict[str, dict[str, float]]) -> str:
    """The rule with the lowest average return day."""
    return min(rules, key=lambda name: rules[name]["avg_return_day"])


def room_found(per_seed: list[float], cem: float, best: float, lower_is_better: bool = True) -> dict[str, float]:
    """``(CEM − row) / (CEM − best)`` per seed (signs flipped where higher is better), mean and 95 % CI.
    NaN where the best rule is no better than CEM: then there is no room to share out."""
    room = (cem - best) if lower_is_better else (best - cem)
    if room <= 0:
        return {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    gains = [((cem - v) if lower_is_better else (v - cem)) / room for v in per_seed]
    return mean_ci(gains)


def share_of_room(result: dict[str, Any], rules: dict[str, dict[str, float]]) -> dict[str, dict[str, dict]]:
    """Per benchmark row: the share of the room found on the return day and on day-1 retention."""
    if "cem" not in result["per_seed"]:
        raise SystemExit("the benchmark has no cem row: the share of the room is measured from CEM's level")
    best = rules[best_rule(rules)]
    cem = result["summary"]["cem"]
    out = {}
    for row, seeds in result["per_seed"].items():
        out[row] = {
            "avg_return_day": room_found([s["avg_return_day"] for s in seeds], cem["avg_return_day"]["mean"],
                                         best["avg_return_day"]),
            "day1_retention": room_found([s["day1_retention"] for s in seeds], cem["day1_retention"]["mean"],
                                         best["day1_retention"], lower_is_better=False),
        }
    return out


def _ci(d: dict[str, float]) -> str:
    if math.isnan(d["mean"]):
        return "—"
    if math.isnan(d["ci_low"]):
        return f"{d['mean']:.2f}"
    return f"{d['mean']:.2f} [{d['ci_low']:.2f}, {d['ci_high']:.2f}]"


def markdown(report: dict[str, Any]) -> str:
    p = report["protocol"]
    lines = [
        f"World seed {p['world_seed']}, preset `{p['world_preset']}`; {p['users']} held-out users over {p['days']} "
        f"days, evaluation seed {p['seed']} (the benchmark's protocol).",
        "",
        "| policy | avg return day ↓ | per user ↓ | day-1 retention ↑ | watch s / request |",
        "|---|---|---|---|---|",
    ]
    for name, r in report["rules"].items():
        lines.append(f"| {name} | {r['avg_return_day']:.3f} | {r['avg_return_day_per_user']:.3f} | "
                     f"{r['day1_retention']:.3f} | {r['watch_time_per_request']:.1f} |")
    if "share_of_room" in report:
        lines += ["", f"Share of the room between CEM and the best rule (`{report['best_rule']}`) each row finds, "
                  "mean [95 % CI] over training seeds:", "",
                  "| row | avg return day | day-1 retention |", "|---|---|---|"]
        for row, s in report["share_of_room"].items():
            lines.append(f"| {row} | {_ci(s['avg_return_day'])} | {_ci(s['day1_retention'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--benchmark", type=Path,
                    help="a benchmark directory: its world, protocol and rows (the world and protocol options "
                         "below are then taken from its results.json)")
    ap.add_argument("--world-preset", choices=WORLD_PRESETS, default="default")
    ap.add_argument("--world-seed", type=int, default=0)
    ap.add_argument("--users", type=positive_int, default=4096)
    ap.add_argument("--days", type=positive_int, default=14)
    ap.add_argument("--seed", type=int, default=7_000_001, help="evaluation seed (the benchmark's by default)")
    ap.add_argument("--out", type=Path, help="write the report as JSON here (and Markdown next to it)")
    args = ap.parse_args(argv)
    result = None
    if args.benchmark is not None:
        path = args.benchmark / "results.json"
        if not path.is_file():
            raise SystemExit(f"{path} not found: pass the directory `rlur benchmark --out` wrote")
        result = json.loads(path.read_text())
        cfg = result["config"]
        if cfg.get("world_path"):
            raise SystemExit("the benchmark ran on a learned world; the rules here are the built-in world's")
        protocol = {"world_preset": cfg.get("world_preset", "default"), "world_seed": cfg["world_seed"],
                    "users": cfg["eval_users"], "days": cfg["eval_days"], "seed": cfg["eval_seed"]}
    else:
        protocol = {"world_preset": args.world_preset, "world_seed": args.world_seed, "users": args.users,
                    "days": args.days, "seed": args.seed}
    torch.set_num_threads(1)
    world = World(WorldConfig.preset(protocol["world_preset"], world_seed=protocol["world_seed"]))
    rules = evaluate_rules(world, protocol["users"], protocol["days"], protocol["seed"])
    report: dict[str, Any] = {"protocol": protocol, "rules": rules, "best_rule": best_rule(rules)}
    if result is not None:
        report["share_of_room"] = share_of_room(result, rules)
    print(markdown(report))
    if args.out is not None:
        atomic_write_json(report, args.out)
        args.out.with_suffix(".md").write_text(markdown(report) + "\n")
    return report


if __name__ == "__main__":
    main()
