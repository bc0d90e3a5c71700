"""The collect/update loop shared by every algorithm, with evaluation, logs and atomic checkpoints.

One training step = one batched environment step: every simulated user gets one request. The
learner serves actions (``serve``), the environment responds, the learner observes the result
(``observe``: store transitions, update networks, or advance a CEM generation). Every
``eval_every`` steps the current deployable policy is evaluated on a fixed set of held-out users.

Run directory:
    config.json      everything needed to rerun
    metrics.csv      long format: step, metric, value (namespaced: train/…, eval/…, time/…)
    checkpoint.pt    the deployable policy (what ``rlur eval``/``serve``/``abtest`` load)
    resume.pt        the full training state (``--resume`` continues bit for bit)
    eval.json        final evaluation, same keys as ``rlur simulate``'s JSON
"""

from __future__ import annotations

import csv
import dataclasses
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from rlur.agents.cem import CEMConfig, CEMSearch
from rlur.agents.fixed import make_fixed_policy
from rlur.agents.networks import gaussian_log_prob
from rlur.agents.policy import TablePolicy
from rlur.agents.rlur import RLURAgent, RLURConfig, explore_candidates
from rlur.agents.td3 import TD3Agent, TD3Config
from rlur.evaluation.rollout import rollout
from rlur.sim.env import RetentionEnv, StepResult, env_state_dict, load_env_state_dict
from rlur.sim.world import BEHAVIOURS, World, WorldConfig
from rlur.training.buffer import DelayedReturnCollector, ReplayBuffer
from rlur.training.checkpoint import atomic_torch_save, atomic_write_json, policy_checkpoint

__all__ = ["ALGOS", "DEFAULT_STEPS", "TrainConfig", "Trainer", "build_world", "evaluate_policy", "make_env"]

ALGOS = ("rlur", "rlur-naive", "td3", "cem", "uniform", "click")
#: Default budgets (batched steps), chosen so each algorithm's learning curve is flat by the end.
DEFAULT_STEPS = {"rlur": 1200, "rlur-naive": 1200, "td3": 1200, "cem": 1200, "uniform": 100, "click": 100}


@dataclass
class TrainConfig:
    algo: str = "rlur"
    steps: int | None = None
    """Batched environment steps (each advances every simulated user by one request)."""
    seed: int = 0
    world_seed: int = 0
    n_users: int = 512
    """Simulated users stepping in parallel during training."""
    batch_size: int = 512
    updates_per_step: int = 1
    learning_starts: int = 20
    """Steps of exploration before the first update."""
    buffer_capacity: int = 200_000
    explore_std_start: float = 0.3
    explore_std_end: float = 0.05
    """σ of the Gaussian policy, annealed linearly over ``explore_anneal_steps``."""
    explore_anneal_steps: int | None = None
    """Steps over which σ anneals (default: the first 80 % of the budget), then held at the end value."""
    eval_every: int = 200
    eval_users: int = 1024
    eval_days: int = 7
    eval_seed: int = 1_000_003
    """Seed of the held-out evaluation users (never used for training)."""
    checkpoint_every: int = 250
    rlur: RLURConfig = field(default_factory=RLURConfig)
    td3: TD3Config = field(default_factory=TD3Config)
    cem: CEMConfig = field(default_factory=CEMConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    world_path: str | None = None
    """A learned world (``rlur data fit --out WORLD``) instead of the built-in one."""

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ValueError(f"unknown algorithm {self.algo!r}; choose one of {', '.join(ALGOS)}")
        if self.steps is None:
            self.steps = DEFAULT_STEPS[self.algo]
        if self.steps <= 0 or self.n_users <= 0 or self.batch_size <= 0 or self.updates_per_step <= 0:
            raise ValueError("steps, n_users, batch_size and updates_per_step must be positive")
        if self.explore_anneal_steps is not None and self.explore_anneal_steps <= 0:
            raise ValueError(f"explore_anneal_steps must be positive, got {self.explore_anneal_steps}")
        self.world.world_seed = self.world_seed

    def explore_std(self, step: int) -> float:
        """σ of the exploration noise at a training step: linear from start to end, then held."""
        anneal = self.explore_anneal_steps if self.explore_anneal_steps is not None else 0.8 * self.steps
        frac = min(1.0, step / max(1.0, anneal))
        return self.explore_std_start + frac * (self.explore_std_end - self.explore_std_start)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["rlur"] = self.rlur.to_dict()
        d["td3"] = self.td3.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        d["rlur"] = RLURConfig.from_dict(d.get("rlur", {}))
        d["td3"] = TD3Config(**{**d.get("td3", {}), "hidden": tuple(d.get("td3", {}).get("hidden", (128, 128)))})
        d["cem"] = CEMConfig(**d.get("cem", {}))
        d["world"] = WorldConfig.from_dict(d["world"]) if "world" in d else WorldConfig()
        return cls(**d)


# ---------------------------------------------------------------------------------------------
class OffPolicyLearner:
    """RLUR / RLUR-naive / TD3: Gaussian exploration, delayed-return replay, gradient updates."""

    def __init__(self, agent: RLURAgent | TD3Agent, cfg: TrainConfig, obs_dim: int, k: int) -> None:
        self.agent, self.cfg = agent, cfg
        self.buffer = ReplayBuffer(cfg.buffer_capacity, obs_dim, k, 1 + len(BEHAVIOURS))
        self.collector = DelayedReturnCollector(self.buffer)
        self.rng = torch.Generator().manual_seed(cfg.seed * 9973 + 11)
        self.step = 0
        self.candidate_share = agent.config.candidate_explore if isinstance(agent, RLURAgent) else 0.0

    def serve(self, obs: torch.Tensor, group: torch.Tensor) -> dict[str, torch.Tensor]:
        self.agent.set_exploration(self.cfg.explore_std(self.step))
        with torch.no_grad():
            mu, std = self.agent.actor(obs, group)
            action = mu + std * torch.randn(mu.shape, generator=self.rng)
            if self.candidate_share:  # RLURConfig.candidate_explore
                action = explore_candidates(action, self.agent.candidates, self.candidate_share, self.rng)
        # log π_b of the Gaussian part, also for a candidate row (the soft regularisation's input)
        return {"action": action, "mu": mu, "std": std, "log_prob": gaussian_log_prob(action, mu, std)}

    def observe(self, obs: torch.Tensor, served: dict, result: StepResult) -> dict[str, float]:
        self.collector.stage(obs, served, result)
        # Returning times observed now (in production: when the users come back).
        self.agent.observe_returns(result.return_time[result.session_end])
        self.step += 1
        stats: dict[str, float] = {}
        if self.step >= self.cfg.learning_starts and self.buffer.size >= self.cfg.batch_size:
            for _ in range(self.cfg.updates_per_step):
                stats = self.agent.update(self.buffer.sample(self.cfg.batch_size, self.rng), self.rng)
        return stats

    def policy(self):
        return self.agent.policy()

    def state_dict(self) -> dict:
        c = self.collector
        return {
            "agent": self.agent.state_dict(), "buffer": self.buffer.state_dict(), "rng": self.rng.get_state(),
            "step": self.step, "staged": None if c._staged is None else c._staged.to_dict(),
            "pending": c._pending_return,
        }

    def load_state_dict(self, state: dict) -> None:
        from rlur.training.buffer import Batch

        self.agent.load_state_dict(state["agent"])
        self.buffer.load_state_dict(state["buffer"])
        self.rng.set_state(state["rng"])
        self.step = state["step"]
        self.collector._staged = None if state["staged"] is None else Batch(**state["staged"])
        self.collector._pending_return = state["pending"]


class CEMLearner:
    def __init__(self, search: CEMSearch) -> None:
        self.search = search

    def serve(self, obs, group):
        return self.search.serve(obs, group)

    def observe(self, obs, served, result):
        return self.search.observe(obs, served, result)

    def policy(self):
        return self.search.policy()

    def state_dict(self):
        return self.search.state_dict()

    def load_state_dict(self, state):
        self.search.load_state_dict(state)


class FixedLearner:
    """``uniform`` / ``click``: nothing to learn; the run still logs and evaluates."""

    def __init__(self, name: str, k: int) -> None:
        fixed = make_fixed_policy(name)
        self._policy = TablePolicy(fixed.action.unsqueeze(0), torch.full((1, k), 0.05))

    def serve(self, obs, group):
        return self._policy.sample(obs, group, deterministic=True)

    def observe(self, obs, served, result):
        return {}

    def policy(self):
        return self._policy

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def rlur_config(cfg: TrainConfig) -> RLURConfig:
    """The RLUR configuration a run uses: RLUR-naive is the retention critic alone (paper Table 1)."""
    if cfg.algo == "rlur-naive":
        return dataclasses.replace(cfg.rlur, immediate=False, rnd=False, normalise=False, groups=False, soft_reg=False)
    return cfg.rlur


def make_learner(cfg: TrainConfig, env: RetentionEnv):
    obs_dim, k, g = env.obs_dim, env.k, env.world.n_groups
    if cfg.algo in ("rlur", "rlur-naive"):
        return OffPolicyLearner(RLURAgent(obs_dim, k, g, rlur_config(cfg)), cfg, obs_dim, k)
    if cfg.algo == "td3":
        return OffPolicyLearner(TD3Agent(obs_dim, k, g, cfg.td3), cfg, obs_dim, k)
    if cfg.algo == "cem":
        return CEMLearner(CEMSearch(k, g, cfg.n_users, cfg.cem, seed=cfg.seed))
    return FixedLearner(cfg.algo, k)


def build_world(world_path: str | None, config: WorldConfig | None = None):
    """The learned world at ``world_path``, else the built-in world of ``config``."""
    if world_path:
        from rlur.data.learned_world import load_world

        return load_world(world_path)
    return World(config or WorldConfig())


def make_env(world, n_users: int, seed: int) -> RetentionEnv:
    """A batched environment over ``world`` (built-in :class:`World` or a learned world)."""
    from rlur.data.learned_world import make_env as _make_env

    return _make_env(world, n_users=n_users, seed=seed)


def evaluate_policy(policy, world, n_users: int, days: int, seed: int, progress: bool = False) -> dict:
    """Deterministic evaluation (μ served) on held-out users; the metrics of ``rlur simulate``."""
    env = make_env(world, n_users, seed)
    recorder, timing = rollout(env, policy, days=days, deterministic=True, progress=progress)
    out = recorder.summary(seed=seed)
    out["requests_per_s"] = timing["requests_per_s"]
    out["days"] = days
    return out


# ---------------------------------------------------------------------------------------------
class Trainer:
    """Owns the env, the learner, the logs and the checkpoints of one run directory."""

    def __init__(self, cfg: TrainConfig, out: str | Path, progress: bool = True, collector: Any = None) -> None:
        """``collector``: a sharded-collection hook (``rlur.distributed.collect.ShardedCollector``) that
        steps the users elsewhere; ``None`` (the default) steps ``self.env`` in this process."""
        self.cfg, self.out, self.progress = cfg, Path(out), progress
        self.out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        self.world = build_world(cfg.world_path, cfg.world)
        self.env = make_env(self.world, cfg.n_users, cfg.seed)
        self.learner = make_learner(cfg, self.env)
        self.collector = collector
        if collector is not None:
            collector.start(self)
        self.step = 0
        self.obs = self.env.observe()
        self.curve: list[dict[str, Any]] = []
        self._tb = _tensorboard_writer(self.out)

    # --- persistence ---------------------------------------------------------------------------
    def _save(self) -> None:
        version = f"{self.cfg.algo}-s{self.cfg.seed}-step{self.step}"
        atomic_torch_save(
            policy_checkpoint(self.learner.policy(), self.world, self.cfg.algo, version, step=self.step,
                              train_config=self.cfg.to_dict(), world_path=self.cfg.world_path),
            self.out / "checkpoint.pt",
        )
        env = env_state_dict(self.env) if self.collector is None else self.collector.state_dict()
        layout = {} if self.collector is None else {"collector": self.collector.describe()}
        atomic_torch_save({
            "step": self.step, "env": env, "learner": self.learner.state_dict(),
            "obs": self.obs, "curve": self.curve, "torch_rng": torch.get_rng_state(),
            "config": self.cfg.to_dict(), **layout,
        }, self.out / "resume.pt")

    def resume(self) -> bool:
        """Continue from ``resume.pt`` if there is one. Returns whether a state was loaded."""
        path = self.out / "resume.pt"
        if not path.exists():
            return False
        state = torch.load(path, map_location="cpu", weights_only=False)
        # Through from_dict, so that a state saved before a config field existed (it then holds that
        # field's default) still resumes.
        if TrainConfig.from_dict(state["config"]).to_dict() != self.cfg.to_dict():
            raise ValueError(f"{path} was written by a different configuration; use a new --out")
        layout = None if self.collector is None else self.collector.describe()
        if state.get("collector") != layout:
            raise ValueError(f"{path} was written with another backend or block layout ({state.get('collector')}); "
                             "resume it with the same --backend and --block-users, or use a new --out")
        self.step = state["step"]
        if self.collector is None:
            load_env_state_dict(self.env, state["env"])
        else:
            self.collector.load_state_dict(state["env"])
        self.learner.load_state_dict(state["learner"])
        self.obs, self.curve = state["obs"], state["curve"]
        torch.set_rng_state(state["torch_rng"])
        _truncate_metrics(self.out / "metrics.csv", self.step)
        return True

    # --- logging ---------------------------------------------------------------------------------
    def _log(self, step: int, metrics: dict[str, float]) -> None:
        path = self.out / "metrics.csv"
        new = not path.exists()
        with path.open("a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["step", "metric", "value"])
            for name, value in metrics.items():
                w.writerow([step, name, f"{float(value):.6g}"])
        if self._tb is not None:
            for name, value in metrics.items():
                self._tb.add_scalar(name, float(value), step)

    def _evaluate(self) -> dict:
        cfg = self.cfg
        result = evaluate_policy(self.learner.policy(), self.world, cfg.eval_users, cfg.eval_days, cfg.eval_seed)
        point = {
            "step": self.step,
            "avg_return_day": result["avg_return_day"]["mean"],
            "day1_retention": result["day1_retention"]["mean"],
        }
        self.curve.append(point)
        self._log(self.step, {
            "eval/avg_return_day": point["avg_return_day"], "eval/day1_retention": point["day1_retention"],
            "eval/session_depth": result["session_depth"]["mean"],
            "eval/watch_time_per_request": result["watch_time_per_request"]["mean"],
        })
        return result

    # --- the loop ----------------------------------------------------------------------------------
    def train(self) -> dict:
        cfg = self.cfg
        atomic_write_json(cfg.to_dict(), self.out / "config.json")
        bar = tqdm(total=cfg.steps, initial=self.step, desc=f"train {cfg.algo}", unit="step",
                   disable=not self.progress, dynamic_ncols=True)
        t0, steps0 = time.perf_counter(), self.step
        while self.step < cfg.steps:
            if self.step % cfg.eval_every == 0 and not any(p["step"] == self.step for p in self.curve):
                self._evaluate()
            if self.step % cfg.checkpoint_every == 0 and self.step > steps0:
                elapsed = time.perf_counter() - t0
                self._log(self.step, {"time/requests_per_s": (self.step - steps0) * cfg.n_users / max(elapsed, 1e-9)})
                self._save()
            if self.collector is None:
                served = self.learner.serve(self.obs, self.env.group)
                result = self.env.step(served["action"])
                stats = self.learner.observe(self.obs, served, result)
                self.obs = result.obs
                n = 1
            else:  # up to the next evaluation, checkpoint or the end
                e, c = cfg.eval_every, cfg.checkpoint_every
                limit = min(cfg.steps, (self.step // e + 1) * e, (self.step // c + 1) * c) - self.step
                n, stats = self.collector.collect(self.learner, limit)
            self.step += n
            if stats and self.step // 50 > (self.step - n) // 50:
                self._log(self.step, stats)
            bar.update(n)
            if self.curve:
                bar.set_postfix(eval_return_day=f"{self.curve[-1]['avg_return_day']:.3f}")
        bar.close()
        final = self._evaluate()
        final.update(algo=cfg.algo, seed=cfg.seed, world_seed=cfg.world_seed, steps=cfg.steps,
                     learning_curve=self.curve)
        atomic_write_json(final, self.out / "eval.json")
        self._save()
        if self._tb is not None:
            self._tb.close()
        return final


def _tensorboard_writer(out: Path):
    """A TensorBoard writer when ``tensorboard`` is installed; CSV logs are always written."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(out / "tb"))


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log rows written after the checkpoint we resume from (a killed run wrote them)."""
    if not path.exists():
        return
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    kept = [rows[0]] + [r for r in rows[1:] if int(r[0]) <= step]
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(kept)

