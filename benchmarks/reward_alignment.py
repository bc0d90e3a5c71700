"""How far the agent's heuristic reward lines up with each world's hidden satisfaction, by group.

For every world (preset × world seed) it reports Pearson's r, per request under random actions,
between each heuristic reward (``rlur.agents.rlur.HEURISTICS``) and the satisfaction that drives the
simulated users' leaving and returning (``rlur.evaluation.alignment``). Every ``rlur benchmark``
records the same for its own world in ``results.json`` (``alignment``).

    python benchmarks/reward_alignment.py --presets default,classic,tired --world-seeds 0,1,2 --out alignment
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rlur.evaluation.alignment import reward_alignment
from rlur.sim.world import GROUPS, WORLD_PRESETS, World, WorldConfig


def _names(text: str, allowed: tuple[str, ...] | None = None) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if allowed is not None and n not in allowed]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(allowed or ('integers',))}, "
                                         f"got {text!r}")
    return names


def _seeds(text: str) -> list[int]:
    try:
        return [int(n) for n in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"world seeds are integers, got {text!r}") from None


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| world | heuristic | " + " | ".join(GROUPS) + " | all |", "|---|---|" + "---|" * (len(GROUPS) + 1)]
    for r in rows:
        for name, by_group in r["alignment"].items():
            if isinstance(by_group, dict):
                lines.append(f"| {r['preset']} {r['world_seed']} | {name} | "
                             + " | ".join(f"{by_group[g]:.2f}" for g in (*GROUPS, "all")) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", type=lambda t: _names(t, WORLD_PRESETS), default=["default"])
    p.add_argument("--world-seeds", type=_seeds, default=[0])
    p.add_argument("--users", type=int, default=2048)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--out", type=Path, default=None, help="folder for alignment.json and alignment.md")
    args = p.parse_args(argv)
    if args.users < 2 or args.steps < 1:
        p.error("--users must be at least 2 and --steps at least 1")
    rows = [{"preset": preset, "world_seed": seed,
             "alignment": reward_alignment(World(WorldConfig.preset(preset, world_seed=seed)), args.users, args.steps)}
            for preset in args.presets for seed in args.world_seeds]
    print(markdown(rows))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "alignment.json").write_text(json.dumps(rows, indent=2))
        (args.out / "alignment.md").write_text(markdown(rows))
    return rows


if __name__ == "__main__":
    main()
