"""How much of a trained critic's action gradient is signal: the twin critics' agreement.

RLUR's actor follows ``∇_a Q(s, a)`` at ``a = μ(s)``. Each critic is a twin pair (TD3-style): two
networks initialised apart and trained on the same batches towards the same target. Where the data
determine how ``Q`` depends on the action, both twins learn that dependence and their action
gradients point the same way; where they do not, each twin's gradient is its own fit to noise and
the two are unrelated. So the cosine between the twins' action gradients, per state, is a direct
read-out of the gradient the actor is given: ≈ 1 a shared signal, ≈ 0 noise.

For each run directory (``rlur train`` or ``rlur benchmark``'s ``runs/<row>/seed<N>``) this loads the
final training state (``resume.pt``), takes ``--states`` states from the run's replay buffer, and
reports per critic (``Q_T`` retention, ``Q_I`` immediate): the mean twin cosine, the share of states
where the twins agree in sign on the larger-magnitude half of the action components, and the
cosine between ``Q_T``'s and ``Q_I``'s gradients (do the two critics pull the same way?).

    python benchmarks/critic_gradients.py runs/benchmark/runs/rlur-naive-g0/seed0 runs/benchmark/runs/rlur/seed0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from rlur.agents.rlur import RLURAgent
from rlur.evaluation.stats import mean_ci
from rlur.training.loop import TrainConfig, build_world, rlur_config


def load_agent(run: Path) -> tuple[RLURAgent, dict, TrainConfig]:
    """The run's agent as it ended training, its replay buffer's fields and its configuration."""
    missing = [name for name in ("config.json", "resume.pt") if not (run / name).is_file()]
    if missing:
        raise SystemExit(f"{run}: no {' or '.join(missing)} (a run directory of `rlur train`, or of "
                         "`rlur benchmark --keep-resume`: the benchmark deletes a finished run's resume.pt)")
    cfg = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    if cfg.algo not in ("rlur", "rlur-naive"):
        raise SystemExit(f"{run}: algorithm {cfg.algo!r} has no RLUR critics")
    state = torch.load(run / "resume.pt", map_location="cpu", weights_only=False)
    buffer = state["learner"]["buffer"]
    n_groups = build_world(cfg.world_path, cfg.world).n_groups
    agent = RLURAgent(buffer["data"]["obs"].shape[1], buffer["data"]["action"].shape[1], n_groups, rlur_config(cfg))
    agent.load_state_dict(state["learner"]["agent"])
    return agent, buffer["data"], cfg


def action_gradients(critic: torch.nn.Module, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``∇_a Q1(s, a)`` and ``∇_a Q2(s, a)`` per row."""
    a = action.clone().requires_grad_(True)
    q1, q2 = critic(obs, a)
    g1 = torch.autograd.grad(q1.sum(), a, retain_graph=True)[0]
    g2 = torch.autograd.grad(q2.sum(), a)[0]
    return g1, g2


def agreement(g1: torch.Tensor, g2: torch.Tensor) -> dict[str, Any]:
    """Mean twin cosine (with its 95 % CI over states) and the sign agreement on the components where
    twin 1's gradient is largest (the upper half by magnitude)."""
    cos = F.cosine_similarity(g1, g2, dim=1)
    big = g1.abs() >= g1.abs().median(dim=1, keepdim=True).values
    sign = ((g1.sign() == g2.sign()) & big).sum(1).float() / big.sum(1).float()
    ci = mean_ci(cos.tolist())
    return {"twin_cosine": ci["mean"], "twin_cosine_ci": (ci["ci_low"], ci["ci_high"]),
            "sign_agreement": float(sign.mean())}


def analyse(run: Path, n_states: int, seed: int) -> dict:
    agent, data, cfg = load_agent(run)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, data["obs"].shape[0], (n_states,), generator=g)
    obs, group = data["obs"][idx], data["group"][idx]
    with torch.no_grad():
        mu, _ = agent.actor(obs, group)
    out: dict = {"run": str(run), "algo": cfg.algo, "gamma": agent.config.gamma}
    gt = action_gradients(agent.critic_t, obs, mu)
    out["Q_T"] = agreement(*gt)
    if agent.config.immediate:
        gi = action_gradients(agent.critic_i, obs, mu)
        out["Q_I"] = agreement(*gi)
        out["cos_QT_QI"] = float(F.cosine_similarity(gt[0] + gt[1], gi[0] + gi[1], dim=1).mean())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="run directories with config.json and resume.pt")
    p.add_argument("--states", type=int, default=4096, help="states drawn from each run's replay buffer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = [analyse(run, args.states, args.seed) for run in args.runs]
    print("| run | γ | Q_T twin cosine (95 % CI) | Q_T sign agreement | Q_I twin cosine | cos(∇Q_T, ∇Q_I) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        qt, qi = r["Q_T"], r.get("Q_I")
        lo, hi = qt["twin_cosine_ci"]
        qi_txt = f"{qi['twin_cosine']:.3f}" if qi else "—"
        both = f"{r['cos_QT_QI']:.3f}" if qi else "—"
        print(f"| {r['run']} | {r['gamma']} | {qt['twin_cosine']:.3f} ({lo:.3f}, {hi:.3f}) | "
              f"{qt['sign_agreement']:.3f} | {qi_txt} | {both} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
