"""Run a simulated online A/B test: two arms in one population, one calendar, one environment.

* The population is ``N`` users drawn from ``seed`` in one world (built-in ``world_seed`` or a learned
  world); every user is assigned to an arm by :func:`~rlur.abtest.assignment.assign_arms`.
* One :class:`~rlur.sim.env.RetentionEnv` holds all N users. The simulation is **calendar
  synchronised**: on day ``t`` only the users whose calendar is at ``t`` are stepped, until each has
  ended the day's last session; then day ``t + 1`` starts. So both arms, and any online learner,
  see the same days in the same order, as in a live test, and no request is simulated past the
  test's last day. Each batched step serves the day's working set: the rows of each arm get their
  arm's actions (a mask per arm, no loop over users), the env steps once, and the results are
  scattered into per-user × day tables with vectorised indexing.
* Frozen arms serve their *stochastic* policy, ``a ~ N(μ, σ)`` (as production does), from a
  seeded generator per arm; fixed policies (uniform, click, random) serve their formula.
* ``online=True``: RLUR / RLUR-naive / TD3 run directories keep learning from their own arm's
  traffic (the run's learner, restored from ``resume.pt``, with ``serve``/``observe`` on the arm's
  rows only); CEM run directories continue their cross-entropy search over the arm's users; fixed
  policies and fixed-baseline run directories (``uniform``, ``click``) stay fixed.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from rlur.abtest.assignment import assign_arms, validate_shares
from rlur.agents.cem import CEMSearch
from rlur.agents.fixed import FIXED_POLICIES, make_fixed_policy
from rlur.agents.policy import GaussianPolicy, load_policy
from rlur.sim.env import RetentionEnv, StepResult
from rlur.sim.world import WorldConfig

__all__ = [
    "ARM_NAMES",
    "Arm",
    "ExperimentConfig",
    "ExperimentResult",
    "UserDayTable",
    "build_arm",
    "resolve_spec",
    "run_experiment",
    "simulate_calendar",
]

ARM_NAMES = ("control", "treatment")
#: Algorithms whose run directory can keep learning online through the off-policy learner.
OFF_POLICY_ALGOS = ("rlur", "rlur-naive", "td3")


@dataclass
class ExperimentConfig:
    """Everything that defines one simulated A/B test (what ``rlur abtest`` flags set)."""

    control: str
    """A run directory (with ``checkpoint.pt``) or a fixed policy name (uniform, click, random)."""
    treatment: str | None = None
    """Same as ``control``; ignored (both arms = control) when ``aa``."""
    users: int = 10_000
    days: int = 14
    seed: int = 0
    """Seed of the population, of the environment's randomness and of the arms' serving noise."""
    world_seed: int = 0
    world_preset: str = "default"
    """Variant of the built-in world (``WORLD_PRESETS``), e.g. the one the arms were trained in."""
    world_path: str | None = None
    """A learned world (``rlur data fit``) instead of the built-in world of ``world_seed``."""
    shares: tuple[float, ...] = (0.5, 0.5)
    salt: str = "rlur-abtest"
    online: bool = False
    aa: bool = False
    alpha: float = 0.05

    def __post_init__(self) -> None:
        if self.users < 2 or self.days < 1:
            raise ValueError(f"need at least 2 users and 1 day, got users={self.users}, days={self.days}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        self.shares = validate_shares(self.shares, len(ARM_NAMES))
        if not self.aa and self.treatment is None:
            raise ValueError("a treatment is needed unless the test is an A/A (--aa)")

    @property
    def specs(self) -> tuple[str, str]:
        """The (control, treatment) specs actually run."""
        return (self.control, self.control if self.aa else str(self.treatment))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# Arms
# ---------------------------------------------------------------------------------------------
class Arm(Protocol):
    """What the runner needs from an arm: serve its rows, then (optionally) learn from them."""

    info: dict[str, Any]

    def act(self, obs: torch.Tensor, group: torch.Tensor, users: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Actions ``(n, k)`` for the arm's rows (``users``: their global ids), plus what ``observe`` needs."""
        ...

    def observe(self, obs: torch.Tensor, served: Any, result: StepResult, users: torch.Tensor) -> None:
        """The step's results on the same rows."""
        ...

    def final_policy(self) -> Any:
        """The policy the arm serves now (after any online learning)."""
        ...


class _FixedArm:
    def __init__(self, policy: Any, info: dict) -> None:
        self.policy, self.info = policy, info

    def act(self, obs, group, users):
        return self.policy.act(obs, group, deterministic=True), None

    def observe(self, obs, served, result, users) -> None:
        pass

    def final_policy(self) -> Any:
        return self.policy


class _FrozenArm:
    """A trained policy served stochastically, ``a ~ N(μ, σ)``, from the arm's own generator."""

    def __init__(self, policy: Any, generator: torch.Generator, info: dict) -> None:
        self.policy, self.generator, self.info = policy, generator, info

    def act(self, obs, group, users):
        return self.policy.sample(obs, group, generator=self.generator)["action"], None

    def observe(self, obs, served, result, users) -> None:
        pass

    def final_policy(self) -> Any:
        return self.policy


class _LearnerArm:
    """An off-policy learner (RLUR, TD3) that serves and learns from its arm's rows."""

    def __init__(self, learner: Any, info: dict) -> None:
        self.learner, self.info = learner, info
        self.updates = 0

    def act(self, obs, group, users):
        served = self.learner.serve(obs, group)
        return served["action"], served

    def observe(self, obs, served, result, users) -> None:
        if self.learner.observe(obs, served, result):
            self.updates += 1

    def final_policy(self) -> Any:
        return self.learner.policy()


class _CEMArm:
    """CEM keeps searching over its arm's users (its population split is over arm-local positions)."""

    def __init__(self, search: CEMSearch, arm_users: torch.Tensor, arm_group: torch.Tensor, n_total: int,
                 info: dict) -> None:
        self.search, self.info = search, info
        self.group = arm_group
        self.local = torch.full((n_total,), -1, dtype=torch.long)
        self.local[arm_users] = torch.arange(len(arm_users))

    def act(self, obs, group, users):
        full = self.search.serve(obs, self.group)  # one action per arm user (by its population member)
        return full["action"][self.local[users]], None

    def observe(self, obs, served, result, users) -> None:
        n, loc = len(self.group), self.local[users]
        end = torch.zeros(n, dtype=torch.bool)
        end[loc] = result.session_end
        rt = torch.full((n,), float("nan"))
        rt[loc] = result.return_time
        empty = torch.empty(0)
        self.search.observe(obs, served, StepResult(
            obs=empty, feedback=empty, session_end=end, return_day=empty, return_time=rt, group=self.group,
            day=empty, shown=empty,
        ))

    def final_policy(self) -> Any:
        return self.search.policy()


def resolve_spec(spec: str) -> dict[str, str]:
    """``{"kind": "fixed", "name": …}`` or ``{"kind": "run", "path": …}``; ``ValueError`` on a bad spec."""
    if spec in FIXED_POLICIES:
        return {"kind": "fixed", "name": spec}
    path = Path(spec)
    if path.is_dir():
        if not (path / "checkpoint.pt").is_file():
            raise ValueError(f"run directory {spec} has no checkpoint.pt (train it with `rlur train`)")
        return {"kind": "run", "path": str(path)}
    if path.is_file() and path.name.endswith(".pt"):
        return {"kind": "run", "path": str(path)}
    raise ValueError(f"unknown policy {spec!r}: not a fixed policy ({', '.join(FIXED_POLICIES)}) "
                     "nor a run directory with checkpoint.pt")


def _other_variant(trained: dict, tested: Any) -> bool:
    """Whether a checkpoint's built-in world differs from the tested one in more than its seed."""
    try:
        config = WorldConfig.from_dict(trained)
    except (KeyError, TypeError):  # not a built-in world's config
        return False
    return dataclasses.replace(config, world_seed=tested.world_seed) != tested


def build_arm(spec: str, index: int, cfg: ExperimentConfig, env: RetentionEnv, arm_users: torch.Tensor) -> Arm:
    """The arm serving ``spec`` to ``arm_users`` (global row ids), frozen or online per ``cfg.online``."""
    resolved = resolve_spec(spec)
    seed = cfg.seed * 1_000_003 + 7919 * (index + 1)
    if resolved["kind"] == "fixed":
        serving = "fresh random weights per request (seeded)" if spec == "random" else "fixed formula (deterministic)"
        info = {"spec": spec, "kind": "fixed", "algo": spec, "serving": serving}
        return _FixedArm(make_fixed_policy(spec, seed=seed), info)
    policy, ckpt = load_policy(resolved["path"])
    algo = str(ckpt.get("algo", "unknown"))
    info: dict[str, Any] = {"spec": spec, "algo": algo, "version": ckpt.get("version")}
    trained_world = ckpt.get("world_config", {}).get("world_seed")
    if cfg.world_path is None and trained_world is not None and trained_world != cfg.world_seed:
        info["note"] = f"trained in world seed {trained_world}, tested in world seed {cfg.world_seed}"
    elif cfg.world_path is None and "world_config" in ckpt and _other_variant(ckpt["world_config"], env.config):
        info["note"] = (f"trained in another variant of the built-in world (e.g. a --world-preset), tested in "
                        f"the {cfg.world_preset!r} one")
    if isinstance(policy, GaussianPolicy) and policy.actor.obs_dim != env.obs_dim:
        raise ValueError(f"{spec}: the policy expects {policy.actor.obs_dim} observation features, the "
                         f"environment has {env.obs_dim}")
    if cfg.online and algo in OFF_POLICY_ALGOS:
        info.update(kind="online", serving="learner: a ~ N(μ, σ_explore), updated from the arm's traffic")
        return _LearnerArm(_off_policy_learner(resolved["path"], ckpt, env, seed), info)
    if cfg.online and algo == "cem":
        info.update(kind="online", serving="CEM search continued over the arm's users")
        return _CEMArm(_cem_search(ckpt, policy, env, len(arm_users), seed), arm_users, env.group[arm_users],
                       env.n_users, info)
    info.update(kind="frozen", serving="a ~ N(μ, σ) from the checkpoint (seeded)")
    return _FrozenArm(policy, torch.Generator().manual_seed(seed), info)


def _train_config(ckpt: dict):
    from rlur.training.loop import TrainConfig

    if "train_config" not in ckpt:
        raise ValueError("this checkpoint has no train_config; online learning needs a run directory "
                         "written by `rlur train`")
    return TrainConfig.from_dict(ckpt["train_config"])


def _off_policy_learner(path: str, ckpt: dict, env: RetentionEnv, seed: int):
    """The run's learner with its full state (critics, optimisers, replay buffer) from ``resume.pt``."""
    from rlur.training.loop import make_learner

    run_dir = Path(path) if Path(path).is_dir() else Path(path).parent
    resume = run_dir / "resume.pt"
    if not resume.is_file():
        raise ValueError(f"--online needs {resume} (the critics and the replay buffer) to continue learning; "
                         "rlur benchmark deletes it from finished runs unless run with --keep-resume")
    cfg = _train_config(ckpt)
    learner = make_learner(cfg, env)
    state = torch.load(resume, map_location="cpu", weights_only=False)
    learner.load_state_dict(state["learner"])
    learner.step = max(learner.step, int(cfg.steps))  # the exploration schedule is at its end
    learner.rng.manual_seed(seed)  # each arm explores with its own noise (A/A: two independent learners)
    return learner


def _cem_search(ckpt: dict, policy: Any, env: RetentionEnv, n_arm: int, seed: int) -> CEMSearch:
    """A CEM search over the arm's users, warm-started at the checkpoint's mean and std."""
    cfg = _train_config(ckpt)
    search = CEMSearch(env.k, env.world.n_groups, n_arm, cfg.cem, seed=seed)
    search.mean, search.std = policy.mu.clone(), policy.std.clone()
    search.n_tables = search.mean.shape[0]
    search._new_generation()  # redraw the population around the loaded distribution
    return search


# ---------------------------------------------------------------------------------------------
# The per-user × day table and the calendar-synchronised simulation
# ---------------------------------------------------------------------------------------------
@dataclass
class UserDayTable:
    """Per-user × day outcomes ``(N, D)``; only days ``0 … D−1`` of the test are recorded."""

    opens: torch.Tensor
    """Sessions started (app opens), int32."""
    requests: torch.Tensor
    """Requests served, int32."""
    watch: torch.Tensor
    """Watch seconds, float64."""
    gaps: torch.Tensor
    """Return gaps that start on this day (the day's last session ended with a return on a later day), int32."""
    gap_days: torch.Tensor
    """Sum of those gaps' lengths in days, int32."""
    group: torch.Tensor
    """``(N,)`` activity group."""

    @classmethod
    def zeros(cls, n: int, days: int, group: torch.Tensor) -> UserDayTable:
        i32 = lambda: torch.zeros(n, days, dtype=torch.int32)  # noqa: E731
        return cls(i32(), i32(), torch.zeros(n, days, dtype=torch.float64), i32(), i32(), group.clone())

    @property
    def n_users(self) -> int:
        return self.opens.shape[0]

    @property
    def days(self) -> int:
        return self.opens.shape[1]

    @property
    def active(self) -> torch.Tensor:
        """``(N, D)`` bool: the user opened the app that day."""
        return self.opens > 0

    def subset(self, rows: torch.Tensor | np.ndarray) -> UserDayTable:
        rows = torch.as_tensor(rows)
        return UserDayTable(**{f.name: getattr(self, f.name)[rows] for f in dataclasses.fields(self)})


def _per_user_names(env: RetentionEnv) -> list[str]:
    """Names of the env's per-user state tensors (first dimension N), as ``env_state_dict`` keeps them."""
    n = env.n_users
    return sorted(k for k, v in vars(env).items()
                  if isinstance(v, torch.Tensor) and k != "_score_ref_inv" and v.dim() >= 1 and v.shape[0] == n)


def simulate_calendar(
    env: RetentionEnv, arms: list[Arm], arm_of_user: torch.Tensor, days: int, progress: bool = False,
) -> tuple[UserDayTable, dict[str, float]]:
    """Step every user day by day until all have passed ``days``; return the table and timing.

    The env's per-user state is kept in full; each day's working set (users whose calendar is at
    that day) is sliced out, stepped, and written back as users leave the day. Users are
    independent in the simulator, so stepping them in this order changes no user's distribution.
    """
    n, k = env.n_users, env.k
    names = _per_user_names(env)
    full = {name: getattr(env, name) for name in names}
    table = UserDayTable.zeros(n, days, full["group"])
    started = torch.ones(n, dtype=torch.bool)  # the next request starts a session (all do at reset)
    cap = env.config.max_opens_per_day * env.config.max_session_depth + 1  # a day cannot take more steps
    steps = requests = 0
    t0 = time.perf_counter()
    bar = tqdm(total=days, desc="simulated days", unit="day", disable=not progress, dynamic_ncols=True)
    try:
        for t in range(days):
            idx = (full["day"] == t).nonzero().squeeze(1)
            if idx.numel() == 0:  # nobody's calendar is at this day (tiny populations)
                bar.update(1)
                continue
            _load_rows(env, full, names, idx)
            obs = env.observe()
            for _ in range(cap):
                if idx.numel() == 0:
                    break
                rows_arm = arm_of_user[idx]
                masks = [(rows_arm == a).nonzero().squeeze(1) for a in range(len(arms))]
                action = torch.empty(idx.numel(), k)
                served: list[Any] = [None] * len(arms)
                for a, (arm, m) in enumerate(zip(arms, masks, strict=True)):
                    if m.numel():
                        action[m], served[a] = arm.act(obs[m], env.group[m], idx[m])
                result = env.step(action)
                _record(table, t, idx, started, result)
                for a, (arm, m) in enumerate(zip(arms, masks, strict=True)):
                    if m.numel():
                        arm.observe(obs[m], served[a], _rows(result, m), idx[m])
                steps += 1
                requests += idx.numel()
                stay = env.day == t
                if not bool(stay.all()):
                    leave = (~stay).nonzero().squeeze(1)
                    for name in names:
                        full[name][idx[leave]] = getattr(env, name)[leave]
                    keep = stay.nonzero().squeeze(1)
                    _shrink(env, names, keep)
                    idx, obs = idx[keep], result.obs[keep]
                else:
                    obs = result.obs
            else:  # pragma: no cover - the env's caps (opens per day, session depth) forbid this
                raise RuntimeError(f"day {t} did not end within {cap} steps")
            bar.update(1)
            bar.set_postfix(requests=f"{requests:,}")
    finally:
        bar.close()
        for name in names:  # the env holds the full population again
            setattr(env, name, full[name])
        env.n_users = n
    seconds = time.perf_counter() - t0
    return table, {"steps": steps, "requests": requests, "seconds": seconds,
                   "requests_per_s": requests / max(seconds, 1e-9)}


def _load_rows(env: RetentionEnv, full: dict[str, torch.Tensor], names: list[str], idx: torch.Tensor) -> None:
    for name in names:
        setattr(env, name, full[name][idx])
    env.n_users = idx.numel()


def _shrink(env: RetentionEnv, names: list[str], keep: torch.Tensor) -> None:
    for name in names:
        setattr(env, name, getattr(env, name)[keep])
    env.n_users = keep.numel()


def _rows(result: StepResult, m: torch.Tensor) -> StepResult:
    return StepResult(**{f.name: getattr(result, f.name)[m] for f in dataclasses.fields(result)})


def _record(table: UserDayTable, t: int, idx: torch.Tensor, started: torch.Tensor, r: StepResult) -> None:
    """Scatter one step of the day-``t`` working set ``idx`` into the table (idx rows are unique)."""
    table.opens[idx, t] += started[idx].int()
    table.requests[idx, t] += 1
    table.watch[idx, t] += r.feedback[:, 0].double()
    gap = r.session_end & (r.return_day >= 1)
    table.gaps[idx, t] += gap.int()
    table.gap_days[idx, t] += torch.where(gap, r.return_day, 0).int()
    started[idx] = r.session_end


# ---------------------------------------------------------------------------------------------
@dataclass
class ExperimentResult:
    """The simulated test: config, assignment, per-user × day table, arms and timing."""

    config: ExperimentConfig
    arm: np.ndarray
    """``(N,)`` arm index of each user (0 = control, 1 = treatment)."""
    table: UserDayTable
    arms: list[dict[str, Any]]
    timing: dict[str, float]
    notes: list[str] = field(default_factory=list)
    final_policies: list[Any] = field(default_factory=list)
    """Each arm's policy at the end of the test (what an online arm learned; fixed ones as they were)."""


def run_experiment(cfg: ExperimentConfig, progress: bool = False) -> ExperimentResult:
    """Build the world and population, assign users, simulate the calendar, return the raw result."""
    from rlur.training.loop import build_world, make_env

    for spec in cfg.specs:
        resolve_spec(spec)  # fail on a bad spec before building anything
    world = build_world(cfg.world_path, WorldConfig.preset(cfg.world_preset, cfg.world_seed))
    env = make_env(world, cfg.users, cfg.seed)
    arm = assign_arms(np.arange(cfg.users), cfg.salt, cfg.shares)
    arm_of_user = torch.from_numpy(arm)
    arms = []
    for a, spec in enumerate(cfg.specs):
        users = (arm_of_user == a).nonzero().squeeze(1)
        arms.append(build_arm(spec, a, cfg, env, users))  # an arm without users is never called
    table, timing = simulate_calendar(env, arms, arm_of_user, cfg.days, progress=progress)
    infos = []
    for a, arm_obj in enumerate(arms):
        info = copy.deepcopy(arm_obj.info)
        info.update(name=ARM_NAMES[a], users=int((arm == a).sum()), share=cfg.shares[a])
        if isinstance(arm_obj, _LearnerArm):
            info["updates"] = arm_obj.updates
        if isinstance(arm_obj, _CEMArm):
            info["generations"] = arm_obj.search.generation
        infos.append(info)
    notes = [f"{i['name']}: {i['note']}" for i in infos if "note" in i]
    return ExperimentResult(cfg, arm, table, infos, timing, notes, [a.final_policy() for a in arms])

