"""Screen CEM settings at the benchmark's budget and evaluation, on a development world.

How the ``cem-per-group`` row's search was tuned: each variant (``CEMConfig`` overrides) is trained
with the benchmark's budget on a world seed that no reported table uses, then evaluated with the
benchmark's protocol. Paired by seed against the first variant on both co-primary metrics.

    python benchmarks/cem_screen.py --world-seed 1 --seeds 3 --out docs/benchmark/cem-screen \\
        --variant plain='{"per_group": true}' --variant stratified='{"per_group": true, "stratify": true}'
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from rlur.evaluation.benchmark import METRICS, BenchmarkConfig
from rlur.evaluation.stats import mean_ci, paired_test
from rlur.training.checkpoint import atomic_write_json

PRIMARY = ("avg_return_day", "avg_return_day_per_user")


def train_variant(name: str, overrides: dict[str, Any], seed: int, world_seed: int, out: str) -> dict[str, Any]:
    """One CEM run with the benchmark's budget and final evaluation."""
    import dataclasses

    import torch

    from rlur.sim.world import WorldConfig
    from rlur.training.loop import TrainConfig, Trainer, evaluate_policy

    torch.set_num_threads(1)
    b = BenchmarkConfig(world_seed=world_seed)
    tc = TrainConfig(algo="cem", steps=b.steps, seed=seed, world_seed=world_seed, n_users=b.n_users,
                     eval_every=b.eval_every, eval_users=b.curve_eval_users, eval_days=b.curve_eval_days,
                     world=WorldConfig.preset(b.world_preset, world_seed=world_seed))
    tc.cem = dataclasses.replace(tc.cem, **overrides)
    trainer = Trainer(tc, Path(out) / name / f"seed{seed}", progress=False)
    trainer.train()
    final = evaluate_policy(trainer.learner.policy(), trainer.world, b.eval_users, b.eval_days, b.eval_seed)
    return {"variant": name, "seed": seed, **{m: final[m]["mean"] for m in METRICS}}


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    name, _, body = text.partition("=")
    try:
        overrides = json.loads(body)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"variant {name!r}: not JSON ({err})") from None
    if not name or not isinstance(overrides, dict):
        raise argparse.ArgumentTypeError(f"a variant is NAME='{{JSON object of CEMConfig fields}}', got {text!r}")
    return name, overrides


def summarise(runs: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    by = {n: sorted((r for r in runs if r["variant"] == n), key=lambda r: r["seed"]) for n in names}
    base = names[0]
    return {n: {m: mean_ci([r[m] for r in rs]) for m in METRICS}
            | {f"{m}_vs_{base}": paired_test([r[m] for r in rs], [r[m] for r in by[base]]) for m in PRIMARY}
            for n, rs in by.items()}


def markdown(summary: dict[str, Any], variants: dict[str, dict], world_seed: int, seeds: int) -> str:
    base = next(iter(variants))
    lines = [f"# CEM screen: world seed {world_seed}, {seeds} seeds, the benchmark's budget and evaluation", "",
             f"| variant | CEMConfig | avg return day | per user | − {base} (return day), p | − {base} (per user), p |",
             "|---|---|---|---|---|---|"]
    for n, s in summary.items():
        d = [s[f"{m}_vs_{base}"] for m in PRIMARY]
        lines.append(f"| {n} | `{json.dumps(variants[n])}` | {s[PRIMARY[0]]['mean']:.3f} ± "
                     f"{(s[PRIMARY[0]]['ci_high'] - s[PRIMARY[0]]['ci_low']) / 2:.3f} | {s[PRIMARY[1]]['mean']:.3f} ± "
                     f"{(s[PRIMARY[1]]['ci_high'] - s[PRIMARY[1]]['ci_low']) / 2:.3f} | "
                     + " | ".join(f"{x['diff']:+.3f}, p={x['p_value']:.3g}" for x in d) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", type=parse_variant, action="append", required=True,
                   help="NAME='{\"per_group\": true, ...}' (repeat; the first is the one the others are paired with)")
    p.add_argument("--world-seed", type=int, default=1)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    variants = dict(args.variant)
    if args.seeds < 2:
        p.error("--seeds must be at least 2 (a paired test needs two)")
    jobs = [(n, o, s) for n, o in variants.items() for s in range(args.seeds)]
    with ProcessPoolExecutor(args.workers) as pool:
        runs = list(pool.map(train_variant, *zip(*jobs, strict=True), [args.world_seed] * len(jobs),
                             [str(args.out / "runs")] * len(jobs)))
    summary = summarise(runs, list(variants))
    report = {"world_seed": args.world_seed, "seeds": args.seeds, "variants": variants, "runs": runs,
              "summary": summary, "command": " ".join(sys.argv)}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(report, args.out / "screen.json")
    (args.out / "screen.md").write_text(markdown(summary, variants, args.world_seed, args.seeds))
    print(markdown(summary, variants, args.world_seed, args.seeds))
    return report


if __name__ == "__main__":
    main()
