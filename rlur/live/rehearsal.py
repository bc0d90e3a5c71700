"""``rlur live``: the production loop, rehearsed end to end on the simulator with a simulated calendar.

Serve → log → join labels when they arrive → train → publish → serve the new version, with the
pieces as separate processes, as in production:

* **this process** runs the simulated users and the ranking service (in process, or ``rlur serve``
  over loopback HTTP) and appends every event to the event log (:mod:`rlur.live.events`);
* a **joiner** process (``rlur live --role joiner``) turns events into transitions
  (:mod:`rlur.live.joiner`);
* a **trainer** process (``rlur live --role trainer``) trains on them and publishes versions that
  the service hot-reloads (:mod:`rlur.live.trainer`).

A role process that dies is restarted (its state is crash-safe); the restarts are reported.

**Two arms.** The population is split by a salted hash of the user id (``rlur.abtest.assignment``)
into *control*, served by a frozen copy of the starting policy (version 0), and *treatment*, served
by the latest published version. Every request's version is logged.

**The simulated calendar.** The simulation is calendar-synchronised as in ``rlur abtest``: day ``t``
steps exactly the users whose calendar is at ``t`` until each has ended the day's last session.
Each request has a simulated timestamp (seconds): a day's first session starts at a random time in
the day's first ``start_window`` seconds, requests of a session are ``request_seconds`` apart, a
same-day reopen starts ``return_time · 86400`` seconds after the session's last request (the
simulator's gap), and a later return starts on its day. Events are appended in simulation order, and
a *tick* closes each day. So a session end's label reaches the log only when the user's next session
starts, days later for most; the joiner sees only what has been logged. The calendar runs faster
than real time: as fast as the machine allows, paced by ``day_seconds`` (minimum wall seconds per
simulated day) and by back-pressure (``max_lag_days``: a day does not start while the trainer's
newest consumed label is more than that many days old), so that how much the policy learns per
simulated day does not depend on how fast the simulator is.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from rlur.abtest.assignment import assign_arms, validate_shares
from rlur.abtest.experiment import UserDayTable
from rlur.agents.fixed import make_fixed_policy
from rlur.agents.policy import GaussianPolicy, TablePolicy, load_policy
from rlur.live.events import SECONDS_PER_DAY, Feedback, Requests, SessionEnds, SessionStarts, SqliteEventLog
from rlur.live.roles import ROLES
from rlur.live.server import CONTROL, TREATMENT, PolicyServer, make_server
from rlur.live.trainer import TrainerConfig
from rlur.sim.env import OBS_DIM, RetentionEnv, StepResult
from rlur.sim.world import BEHAVIOURS, GROUPS, SCORE_NAMES, World, WorldConfig
from rlur.training.checkpoint import atomic_torch_save, atomic_write_json, policy_checkpoint

__all__ = ["LiveConfig", "LiveRun", "Supervisor", "read_progress", "run_live"]

START_POLICIES = ("uniform", "click")


@dataclass
class LiveConfig:
    """Everything that defines one ``rlur live`` run (written to ``OUT/config.json``)."""

    users: int = 8192
    days: int = 30
    seed: int = 0
    world_seed: int = 0
    start: str = "uniform"
    """The starting policy: ``uniform``, ``click``, or a checkpoint (``rlur train`` run directory or
    ``.pt``), e.g. a CEM run. Its μ is served with σ = the trainer's initial exploration scale."""
    horizon_days: int | None = None
    """K, the censoring horizon (default: the world's ``max_return_day``, 10)."""
    shares: tuple[float, float] = (0.5, 0.5)
    salt: str = "rlur-live"
    server: str = "inprocess"
    """``inprocess`` or ``http`` (``rlur serve`` on loopback)."""
    request_seconds: int = 120
    """Simulated seconds between two requests of a session."""
    start_window: int = 8 * 3600
    """A day's first session starts at a uniform time in the day's first this-many seconds."""
    day_seconds: float = 0.0
    """Minimum wall seconds per simulated day (0: as fast as back-pressure allows)."""
    max_lag_days: float = 1.0
    """Back-pressure: day d starts only once the trainer has consumed a label from day d − this."""
    final_days: int | None = None
    """Days at the end over which the final lift is measured (default: the last third)."""
    joiner_batch: int = 50_000
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    def __post_init__(self) -> None:
        if self.users < 2 or self.days < 1:
            raise ValueError(f"need at least 2 users and 1 day, got users={self.users}, days={self.days}")
        self.shares = tuple(validate_shares(self.shares, 2))  # type: ignore[assignment]
        if self.server not in ("inprocess", "http"):
            raise ValueError(f"unknown server {self.server!r}; choose inprocess or http")
        if self.horizon_days is not None and self.horizon_days < 1:
            raise ValueError(f"the censoring horizon must be at least 1 day, got {self.horizon_days}")
        if not 1 <= self.request_seconds <= 3600:
            raise ValueError(f"request_seconds must be in 1..3600, got {self.request_seconds}")
        if not 0 <= self.start_window <= SECONDS_PER_DAY // 2:
            raise ValueError(f"start_window must be in 0..43200 seconds, got {self.start_window}")
        if self.day_seconds < 0 or self.max_lag_days < 0:
            raise ValueError("day_seconds and max_lag_days must be ≥ 0")
        if self.final_days is not None and not 1 <= self.final_days <= self.days:
            raise ValueError(f"final_days must be in 1..{self.days}, got {self.final_days}")

    @property
    def final_window(self) -> int:
        return self.final_days or max(1, self.days // 3)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["trainer"] = self.trainer.to_dict()
        d["shares"] = list(self.shares)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> LiveConfig:
        d = dict(d)
        d["trainer"] = TrainerConfig.from_dict(d.get("trainer", {}))
        d["shares"] = tuple(d.get("shares", (0.5, 0.5)))
        return cls(**d)


# ---------------------------------------------------------------------------------------------
# Role processes
# ---------------------------------------------------------------------------------------------
class Supervisor:
    """Runs the joiner and trainer as their own processes (``python -m rlur.live --role …``, the same as
    ``rlur live --role …`` with fewer imports); restarts one that dies early."""

    def __init__(self, out: Path, roles: tuple[str, ...] = ROLES) -> None:
        self.out = out
        self.roles = roles
        self.procs: dict[str, subprocess.Popen] = {}
        self.restarts = dict.fromkeys(roles, 0)
        (out / "logs").mkdir(parents=True, exist_ok=True)
        (out / "pids").mkdir(parents=True, exist_ok=True)

    def start(self, role: str) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        with (self.out / "logs" / f"{role}.log").open("ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "rlur.live", "--role", role, "--out", str(self.out)],
                                    stdout=log, stderr=subprocess.STDOUT, env=env)
        self.procs[role] = proc
        (self.out / "pids" / f"{role}.pid").write_text(f"{proc.pid}\n")

    def start_all(self) -> None:
        for role in self.roles:
            self.start(role)

    def check(self) -> None:
        """Restart any role that exited with an error or a signal (a clean exit 0 means it finished)."""
        for role, proc in list(self.procs.items()):
            code = proc.poll()
            if code is not None and code != 0:
                self.restarts[role] += 1
                if self.restarts[role] > 20:
                    raise RuntimeError(f"the {role} keeps failing (exit {code}); see {self.out / 'logs' / role}.log")
                self.start(role)

    def done(self, role: str) -> bool:
        return self.procs[role].poll() == 0

    def wait(self, timeout: float, on_wait: Any = None) -> bool:
        """Wait for every role to finish (restarting failed ones); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            if all(self.done(r) for r in self.roles):
                return True
            if on_wait is not None:
                on_wait()
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# ---------------------------------------------------------------------------------------------
# The simulation
# ---------------------------------------------------------------------------------------------
def _per_user_names(env: RetentionEnv) -> list[str]:
    n = env.n_users
    return sorted(k for k, v in vars(env).items()
                  if isinstance(v, torch.Tensor) and k != "_score_ref_inv" and v.dim() >= 1 and v.shape[0] == n)


def _load_rows(env: RetentionEnv, full: dict[str, torch.Tensor], idx: torch.Tensor) -> None:
    for name, value in full.items():
        setattr(env, name, value[idx])
    env.n_users = idx.numel()


def _shrink(env: RetentionEnv, names: list[str], keep: torch.Tensor) -> None:
    for name in names:
        setattr(env, name, getattr(env, name)[keep])
    env.n_users = keep.numel()


def start_policy(spec: str, world: World, sigma: float) -> GaussianPolicy | TablePolicy:
    """The starting policy's μ (a fixed formula or a checkpoint) with exploration scale ``sigma``."""
    k = len(SCORE_NAMES)
    if spec in START_POLICIES:
        return TablePolicy(make_fixed_policy(spec).action.unsqueeze(0), torch.full((1, k), sigma))
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"no start policy {spec!r}: not one of {', '.join(START_POLICIES)} nor a checkpoint")
    policy, _ = load_policy(path)
    if isinstance(policy, TablePolicy):
        return TablePolicy(policy.mu.clone(), torch.full_like(policy.mu, sigma))
    policy.actor.set_std(sigma)
    return policy


@dataclass
class _Users:
    """Per-user bookkeeping of the rehearsal (N users), beside the env's own state."""

    next_ts: torch.Tensor
    """Simulated time of the user's next request."""
    starting: torch.Tensor
    """The next request opens a session."""
    session: torch.Tensor
    """Current session id."""


class LiveRun:
    """One rehearsal: set-up, the simulated days, the drain, the summary (see the module docstring)."""

    def __init__(self, cfg: LiveConfig, out: str | Path, progress: bool = True) -> None:
        self.cfg, self.out, self.progress = cfg, Path(out), progress
        self.world = World(WorldConfig(world_seed=cfg.world_seed))
        self.k_horizon = cfg.horizon_days or self.world.config.max_return_day
        self.paths = {name: self.out / f for name, f in (
            ("events", "events.sqlite"), ("joiner", "joiner.sqlite"), ("control", "control.pt"),
            ("current", "current.pt"), ("config", "config.json"))}

    # --- set-up ------------------------------------------------------------------------------------
    def setup(self) -> None:
        """Write the config, version 0 (= the control arm's frozen copy) and ``current.pt``; open the log."""
        cfg, out = self.cfg, self.out
        if self.paths["events"].exists():
            raise ValueError(f"{out} already holds a live run (events.sqlite); use a new --out")
        out.mkdir(parents=True, exist_ok=True)
        policy = start_policy(cfg.start, self.world, cfg.trainer.explore_std_start)
        ckpt = policy_checkpoint(policy, self.world, f"start:{cfg.start}", "v00000", live_version=0,
                                 published_wall=time.time())
        for path in (out / "policies" / "v00000.pt", self.paths["control"], self.paths["current"]):
            atomic_torch_save(ckpt, path)
        atomic_write_json({**cfg.to_dict(), "horizon_days_resolved": self.k_horizon}, self.paths["config"])
        self.log = SqliteEventLog(self.paths["events"], meta={
            "obs_dim": OBS_DIM, "k": len(SCORE_NAMES),
            "n_feedback": 1 + len(BEHAVIOURS), "slate_size": self.world.config.slate_size, "groups": list(GROUPS),
            "horizon_days": self.k_horizon, "seconds_per_day": SECONDS_PER_DAY,
            "request_seconds": cfg.request_seconds, "users": cfg.users, "world_seed": cfg.world_seed,
        })

    # --- the loop ------------------------------------------------------------------------------------
    def run(self, roles: tuple[str, ...] = ROLES) -> dict:
        """Set up, start the roles and the service, simulate the days, close the log, drain, summarise.

        ``roles=()`` only simulates and logs (no joiner, no trainer: the treatment keeps version 0) and
        returns the timing; the benchmark and the tests build event logs this way.
        """
        cfg = self.cfg
        self.setup()
        env = RetentionEnv(self.world, cfg.users, cfg.seed)
        arm = assign_arms(np.arange(cfg.users), cfg.salt, cfg.shares)
        self.arm_of_user = torch.from_numpy(arm)
        supervisor = Supervisor(self.out, roles)
        server: PolicyServer | None = None
        t0 = time.perf_counter()
        try:
            supervisor.start_all()
            server = make_server(cfg.server, self.paths["control"], self.paths["current"], cfg.seed,
                                 self.out / "logs")
            table, sim = self._simulate(env, server, supervisor)
            self.log.append(tick=cfg.days * SECONDS_PER_DAY, final=True)
            drain_start = time.perf_counter()
            if not supervisor.wait(timeout=3600):
                raise RuntimeError("the joiner or trainer did not finish within an hour after the log closed")
            sim["drain_seconds"] = time.perf_counter() - drain_start
        finally:
            if server is not None:
                server.close()
            supervisor.stop()
        sim["wall_seconds"] = time.perf_counter() - t0
        sim["restarts"] = supervisor.restarts
        if not roles:
            self.log.close()
            return sim
        from rlur.live.report import summarise

        summary = summarise(self, table, arm, sim)
        self.log.close()
        return summary

    def _simulate(self, env: RetentionEnv, server: PolicyServer, supervisor: Supervisor) -> tuple[UserDayTable, dict]:
        cfg, n = self.cfg, env.n_users
        names = _per_user_names(env)
        full = {name: getattr(env, name) for name in names}
        rng = torch.Generator().manual_seed(cfg.seed * 7_777_777 + 5)
        users = _Users(
            next_ts=torch.randint(0, max(1, cfg.start_window), (n,), generator=rng),
            starting=torch.ones(n, dtype=torch.bool), session=torch.full((n,), -1, dtype=torch.long))
        table = UserDayTable.zeros(n, cfg.days, full["group"])
        self.counters = {"request": 0, "session": 0}
        stats = {"steps": 0, "requests": 0, "sim_seconds": 0.0, "wait_seconds": 0.0, "versions_served": []}
        cap = env.config.max_opens_per_day * env.config.max_session_depth + 1
        bar = tqdm(total=cfg.days, desc="live: simulated days", unit="day", disable=not self.progress,
                   dynamic_ncols=True)
        try:
            for t in range(cfg.days):
                self._wait_for_trainer(t, supervisor, stats)
                day_start = time.perf_counter()
                idx = (full["day"] == t).nonzero().squeeze(1)
                if idx.numel():
                    _load_rows(env, full, idx)
                    for _ in range(cap):
                        if idx.numel() == 0:
                            break
                        idx = self._step(env, server, full, names, idx, t, users, rng, table, stats)
                    else:  # pragma: no cover - the env's caps forbid this
                        raise RuntimeError(f"day {t} did not end within {cap} steps")
                    for name in names:
                        setattr(env, name, full[name])
                    env.n_users = n
                self.log.append(tick=(t + 1) * SECONDS_PER_DAY)
                stats["versions_served"].append(server.version(TREATMENT))
                supervisor.check()
                stats["sim_seconds"] += time.perf_counter() - day_start
                spare = cfg.day_seconds - (time.perf_counter() - day_start)
                if spare > 0:
                    time.sleep(spare)
                bar.update(1)
                bar.set_postfix(self._postfix(server, stats), refresh=False)
        finally:
            bar.close()
            for name in names:
                setattr(env, name, full[name])
            env.n_users = n
        return table, stats

    def _step(self, env: RetentionEnv, server: PolicyServer, full: dict[str, torch.Tensor], names: list[str],
              idx: torch.Tensor, t: int, users: _Users, rng: torch.Generator, table: UserDayTable,
              stats: dict) -> torch.Tensor:
        """Serve one request to each user of the day's working set ``idx``; log it; return who stays."""
        n = idx.numel()
        obs = env.observe()
        ts = users.next_ts[idx]
        # Sessions opening now get an id and a start event (their first request follows).
        opening = users.starting[idx]
        n_open = int(opening.sum())
        sids = torch.arange(self.counters["session"], self.counters["session"] + n_open)
        self.counters["session"] += n_open
        users.session[idx[opening]] = sids
        rid = np.arange(self.counters["request"], self.counters["request"] + n, dtype=np.int64)
        self.counters["request"] += n
        served = self._serve(server, obs, env.group, idx, rid)
        result = env.step(served["action"])
        day = np.full(n, t, dtype=np.int64)
        end = result.session_end
        self.log.append(
            starts=SessionStarts(user_id=idx[opening].numpy(), session_id=sids.numpy(), ts=ts[opening].numpy(),
                                 day=day[:n_open]),
            requests=Requests(
                request_id=rid, user_id=idx.numpy(), session_id=users.session[idx].numpy(), ts=ts.numpy(), day=day,
                arm=self.arm_of_user[idx].numpy(), group=env.group.numpy(), version=served["version"],
                state=obs.numpy(), action=served["action"].numpy(), mu=served["mu"].numpy(),
                sigma=served["sigma"].numpy(), logp=served["logp"].numpy(), shown=result.shown.numpy()),
            feedback=Feedback(request_id=rid, ts=ts.numpy(), values=result.feedback.float().numpy()),
            ends=SessionEnds(user_id=idx[end].numpy(), session_id=users.session[idx[end]].numpy(),
                             request_id=rid[end.numpy()], ts=ts[end].numpy(), day=day[: int(end.sum())]),
        )
        _record(table, t, idx, opening, result)
        users.next_ts[idx] = self._next_times(ts, t, result, rng)
        users.starting[idx] = end
        stats["steps"] += 1
        stats["requests"] += n
        stay = env.day == t
        if bool(stay.all()):
            return idx
        leave = (~stay).nonzero().squeeze(1)
        for name in names:
            full[name][idx[leave]] = getattr(env, name)[leave]
        keep = stay.nonzero().squeeze(1)
        _shrink(env, names, keep)
        return idx[keep]

    def _serve(self, server: PolicyServer, obs: torch.Tensor, group: torch.Tensor, idx: torch.Tensor,
               rid: np.ndarray) -> dict[str, Any]:
        """Each arm's rows go to the arm's policy (a mask per arm, no loop over users)."""
        n, k = idx.numel(), len(SCORE_NAMES)
        out = {"action": torch.empty(n, k), "mu": torch.empty(n, k), "sigma": torch.empty(n, k),
               "logp": torch.empty(n), "version": np.empty(n, dtype=np.int64)}
        arm = self.arm_of_user[idx]
        for a in (CONTROL, TREATMENT):
            m = (arm == a).nonzero().squeeze(1)
            if m.numel() == 0:
                continue
            s = server.serve(a, obs[m], group[m], rid[m.numpy()], idx[m].numpy())
            out["action"][m], out["mu"][m], out["sigma"][m], out["logp"][m] = s.action, s.mu, s.sigma, s.logp
            out["version"][m.numpy()] = s.version
        return out

    def _next_times(self, ts: torch.Tensor, t: int, r: StepResult, rng: torch.Generator) -> torch.Tensor:
        """Each user's next request time: +request_seconds within a session, the simulator's gap after a
        same-day reopen, a random start time on the return day otherwise (kept inside the day)."""
        cfg = self.cfg
        day_end = (t + 1) * SECONDS_PER_DAY - 1
        gap = torch.nan_to_num(r.return_time, nan=0.0).mul(SECONDS_PER_DAY).round().long()
        later_day = r.return_day.clamp(min=0)
        start = torch.randint(0, max(1, cfg.start_window), ts.shape, generator=rng)
        nxt = torch.where(~r.session_end, ts + cfg.request_seconds,
                          torch.where(r.return_day == 0, ts + gap, (t + later_day) * SECONDS_PER_DAY + start))
        same_day = ~r.session_end | (r.return_day == 0)
        return torch.where(same_day, nxt.clamp(max=day_end), nxt)

    def _wait_for_trainer(self, t: int, supervisor: Supervisor, stats: dict) -> None:
        """Back-pressure: day ``t`` waits until the trainer consumed a label from day ``t − max_lag_days``."""
        lag = self.cfg.max_lag_days
        if lag <= 0 or t - lag <= 0:
            return
        need = (t - lag) * SECONDS_PER_DAY
        start = time.perf_counter()
        while True:
            prog = read_progress(self.out)
            if prog.get("label_ts", 0) >= need or prog.get("done"):
                break
            supervisor.check()
            if time.perf_counter() - start > 600:
                raise RuntimeError("the trainer made no progress for 10 minutes; see logs/trainer.log")
            time.sleep(0.02)
        stats["wait_seconds"] += time.perf_counter() - start

    def _postfix(self, server: PolicyServer, stats: dict) -> dict[str, str]:
        prog = read_progress(self.out)
        return {"req": f"{stats['requests']:,}", "version": str(server.version(TREATMENT)),
                "updates": str(prog.get("updates", 0)), "buffer": f"{prog.get('buffer', 0):,}"}


def read_progress(out: Path) -> dict:
    """The trainer's progress file (empty before its first write)."""
    try:
        return json.loads((out / "trainer" / "progress.json").read_text())
    except (OSError, ValueError):
        return {}


def _record(table: UserDayTable, t: int, idx: torch.Tensor, opening: torch.Tensor, r: StepResult) -> None:
    """Scatter one step of day ``t`` into the per-user × day table (``idx`` rows are unique)."""
    table.opens[idx, t] += opening.int()
    table.requests[idx, t] += 1
    table.watch[idx, t] += r.feedback[:, 0].double()
    gap = r.session_end & (r.return_day >= 1)
    table.gaps[idx, t] += gap.int()
    table.gap_days[idx, t] += torch.where(gap, r.return_day, 0).int()


def run_live(cfg: LiveConfig, out: str | Path, progress: bool = True) -> dict:
    """Run the rehearsal and return its summary (also written to ``OUT/live.json``)."""
    return LiveRun(cfg, out, progress).run()

