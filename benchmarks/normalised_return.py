"""What RLUR's return normalisation keeps of the returning time, per activity group.

RLUR replaces the returning time ``T`` by ``clip(T / ((1 − T'(x)) · T_β), 0, α)`` (paper §3.3,
:func:`rlur.agents.rlur.normalised_return`). For each trained RLUR run this loads the final
training state (``resume.pt``), applies the run's own classifier ``T'`` and running quantile ``T_β``
to the session ends in its replay buffer, and reports per group: the mean ``T``, the classifier's
mean ``P(T ≤ T_β)``, the mean bound ``(1 − T'(x)) · T_β``, the share of session ends clipped at α,
and the mean normalised reward of same-day reopens, next-day returns and later returns
(docs/critic.md, section 6).

    python benchmarks/normalised_return.py runs/benchmark/runs/rlur/seed0 runs/benchmark/runs/rlur/seed1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from rlur.agents.rlur import normalised_return
from rlur.sim.world import GROUPS
from rlur.training.checkpoint import atomic_write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
from critic_gradients import load_agent  # a run's final agent and replay buffer

#: Returning-time bands (days): a same-day reopen is a few hours, a return on a later calendar day
#: counts whole days.
BANDS = {"same_day": (0.0, 0.5), "next_day": (0.5, 1.5), "later": (1.5, float("inf"))}


def _mean(x: torch.Tensor) -> float | None:
    return float(x.mean()) if x.numel() else None


def analyse(run: Path) -> dict[str, Any]:
    """Per-group statistics of the normalised return on the run's replay buffer."""
    agent, buf, _ = load_agent(run)
    if not agent.config.normalise:
        raise SystemExit(f"{run}: this run does not normalise the return (no classifier)")
    end = buf["session_end"].bool()
    t, group, obs = buf["return_time"][end], buf["group"][end], buf["obs"][end]
    with torch.no_grad():
        p_short = torch.sigmoid(agent.classifier(obs).squeeze(-1))
    t_beta, alpha = agent.t_beta(), agent.config.clip_alpha
    r = normalised_return(t, p_short, t_beta, alpha)
    out: dict[str, Any] = {"run": run.name, "t_beta": t_beta, "alpha": alpha, "session_ends": int(end.sum()),
                           "share": {b: _mean(((t >= lo) & (t < hi)).float()) for b, (lo, hi) in BANDS.items()},
                           "groups": {}}
    for k, name in enumerate(GROUPS):
        m = group == k
        tm, rm, pm = t[m], r[m], p_short[m]
        out["groups"][name] = {
            "session_ends": int(m.sum()),
            "mean_T": _mean(tm),
            "mean_p_short": _mean(pm),
            "mean_bound": _mean((1 - pm) * t_beta),
            "clipped": _mean((rm >= alpha - 1e-6).float()),
            "reward": {b: _mean(rm[(tm >= lo) & (tm < hi)]) for b, (lo, hi) in BANDS.items()},
        }
    return out


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="run directories of RLUR (rlur train / rlur benchmark)")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    results = [analyse(run) for run in args.runs]
    for res in results:
        share = res["share"]
        print(f"{res['run']}: T_β = {res['t_beta']:.3f} days, α = {res['alpha']}, {res['session_ends']} session ends "
              f"(same day {_fmt(share['same_day'])}, next day {_fmt(share['next_day'])}, later {_fmt(share['later'])})")
        print("| group | session ends | mean T | mean P(T ≤ T_β) | mean bound | clipped at α | "
              "normalised reward: same day / next day / later |")
        print("|---|---|---|---|---|---|---|")
        for name, g in res["groups"].items():
            rw = g["reward"]
            print(f"| {name} | {g['session_ends']} | {_fmt(g['mean_T'])} | {_fmt(g['mean_p_short'])} | "
                  f"{_fmt(g['mean_bound'])} | {_fmt(g['clipped'])} | "
                  f"{_fmt(rw['same_day'])} / {_fmt(rw['next_day'])} / {_fmt(rw['later'])} |")
    if args.out:
        atomic_write_json(results, args.out)


if __name__ == "__main__":
    main()
