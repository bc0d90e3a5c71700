"""The continuous trainer: joined transitions in, versioned policies out.

It reads the joiner's transitions past its own cursor, fetches the requests they reference from the
event log (state, action, and the μ_b, σ_b, log p_b of the version that *really* served them),
adds them to a replay buffer, runs one gradient update per ``transitions_per_update`` new
transitions, and every ``publish_every`` updates publishes a version:

1. ``policies/vNNNNN.pt``, written atomically and never changed again;
2. ``trainer/state.pt``: the agent (networks, optimisers, return statistics), the cursor, the version
   and the RNG, atomically, in one file;
3. ``current.pt``, atomically replaced: the file the ranking service watches and hot-reloads.

**Crash safety.** The state in step 2 is the commit point. A trainer killed anywhere restarts from
its last state: the transitions after its cursor are read again (none lost); those before it are
already in the agent and are put back into the replay buffer from the joiner's table, each once, at
the ring positions they had (none duplicated); the next version number follows the last committed
one, so a version file written after the last commit, which nothing served since ``current.pt`` still
named the previous version, is rewritten and never duplicated; if ``current.pt`` lags the state it is
brought up to date. With the same transitions in the table, an interrupted run ends bit for bit where
an uninterrupted one does (tested).

**Rewards.** The return label is the joiner's ``return_time`` in days. A censored session end (no
return within K days) has ``return_time = K`` and ``s' = s``: the worst return the log can label,
so RLUR's reward ``−T`` (or its normalised form) is the lowest for it, consistently with the joiner.
Rows the log closed on (``censored = 2``) are never trained on.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlur.agents.policy import GaussianPolicy, TablePolicy, policy_from_dict
from rlur.agents.rlur import RLURAgent, RLURConfig
from rlur.agents.td3 import TD3Agent, TD3Config
from rlur.live.events import EventLog, connect
from rlur.live.joiner import CLOSED, TransitionRows, _StopFlag, read_transitions
from rlur.sim.world import World, WorldConfig
from rlur.training.buffer import Batch, ReplayBuffer
from rlur.training.checkpoint import atomic_torch_save, atomic_write_bytes, atomic_write_json, policy_checkpoint

__all__ = ["TRAINER_ALGOS", "ContinuousTrainer", "PolicyStore", "TrainerConfig", "build_batch", "warm_start_actor"]

TRAINER_ALGOS = ("rlur", "rlur-naive", "td3")


@dataclass
class TrainerConfig:
    """How the continuous trainer learns and publishes."""

    algo: str = "rlur"
    seed: int = 0
    batch_size: int = 512
    transitions_per_update: float = 256.0
    """One gradient update per this many new trainable transitions (offline ``rlur train``: 512)."""
    learning_starts: int = 5_000
    """Trainable transitions in the buffer before the first update."""
    buffer_capacity: int = 200_000
    publish_every: int = 25
    """Updates between published versions."""
    explore_std_start: float = 0.3
    explore_std_end: float = 0.05
    explore_anneal: int = 300_000
    """σ anneals linearly from start to end over this many trainable transitions."""
    read_chunk: int = 4_096
    """Transitions read per round."""
    train_arms: str = "treatment"
    """``treatment``: the treatment arm's own traffic (on-policy up to the serving lag); ``all``: both arms'
    traffic, each sample with the behaviour log-prob of the version that served it (the control arm's frozen
    version included). In our runs, adding the control arm's traffic made the policy regress (docs/live.md)."""
    poll_seconds: float = 0.05
    rlur: RLURConfig = field(default_factory=RLURConfig)
    td3: TD3Config = field(default_factory=TD3Config)

    def __post_init__(self) -> None:
        if self.algo not in TRAINER_ALGOS:
            raise ValueError(f"unknown algorithm {self.algo!r} for the live trainer; choose one of "
                             f"{', '.join(TRAINER_ALGOS)}")
        if self.train_arms not in ("all", "treatment"):
            raise ValueError(f"train_arms must be 'all' or 'treatment', got {self.train_arms!r}")
        if self.batch_size < 1 or self.publish_every < 1 or not self.transitions_per_update > 0:
            raise ValueError("batch_size, publish_every and transitions_per_update must be positive")
        if not 1 <= self.read_chunk <= self.buffer_capacity:
            raise ValueError(f"read_chunk must be in 1..{self.buffer_capacity} (the buffer), got {self.read_chunk}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["rlur"], d["td3"] = self.rlur.to_dict(), self.td3.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainerConfig:
        d = dict(d)
        r, t = d.pop("rlur", {}), d.pop("td3", {})
        return cls(**d, rlur=RLURConfig.from_dict(r),
                   td3=TD3Config(**{**t, "hidden": tuple(t.get("hidden", (128, 128)))}))

    def explore_std(self, n: int) -> float:
        frac = min(1.0, n / max(1, self.explore_anneal))
        return self.explore_std_start + frac * (self.explore_std_end - self.explore_std_start)


def make_agent(cfg: TrainerConfig, obs_dim: int, k: int, n_groups: int) -> RLURAgent | TD3Agent:
    """RLUR, RLUR-naive (the retention critic alone, paper Table 1) or TD3."""
    if cfg.algo == "td3":
        return TD3Agent(obs_dim, k, n_groups, cfg.td3)
    rc = cfg.rlur
    if cfg.algo == "rlur-naive":
        rc = dataclasses.replace(rc, immediate=False, rnd=False, normalise=False, groups=False, soft_reg=False)
    return RLURAgent(obs_dim, k, n_groups, rc)


@torch.no_grad()
def warm_start_actor(agent: RLURAgent | TD3Agent, start: GaussianPolicy | TablePolicy) -> None:
    """Make the agent's actor serve what ``start`` serves, so version 1 continues from the start policy.

    A table (uniform, CEM): the output layer's weights are zeroed and its bias set to ``atanh(μ_g)``,
    so ``μ(s) = μ_g`` for every state (gradients still reach the output layer, and through it the
    rest). A Gaussian actor with the same shape is copied. The target actor follows.
    """
    actor = agent.actor
    if isinstance(start, GaussianPolicy):
        src = start.actor
        if (src.obs_dim, src.k, src.n_groups, tuple(src.hidden)) != (actor.obs_dim, actor.k, actor.n_groups,
                                                                        tuple(actor.hidden)):
            raise ValueError("the start policy's actor has another shape than the trainer's (groups, hidden "
                             "layers); start from a table policy or match --algo")
        actor.body.load_state_dict(src.body.state_dict())
    else:
        mu = start.mu.clamp(-0.999, 0.999)
        if mu.shape[0] != actor.n_groups:
            mu = mu.mean(0, keepdim=True).expand(actor.n_groups, -1)
        actor.body.nets.weights[-1].zero_()
        actor.body.nets.biases[-1].copy_(torch.atanh(mu).unsqueeze(1))
    agent.actor_target.load_state_dict(actor.state_dict())


def build_batch(rows: TransitionRows, log: EventLog, horizon_days: int) -> Batch:
    """The replay rows of ``rows`` (closed rows must be filtered out before), with the payloads of the
    requests they reference: behaviour μ, σ and log-prob exactly as logged by the serving version."""
    has_next = rows.next_seq >= 0
    req = log.fetch_requests(np.concatenate((rows.request_seq, rows.next_seq[has_next])))
    n = len(rows)
    state = torch.from_numpy(req.state[:n].copy())
    next_state = state.clone()
    next_state[torch.from_numpy(has_next)] = torch.from_numpy(req.state[n:].copy())
    end = torch.from_numpy(rows.session_end.astype(bool))
    rt = np.where(rows.censored == 1, float(horizon_days), np.nan_to_num(rows.return_time))
    return Batch(
        obs=state, action=torch.from_numpy(req.action[:n].copy()), behaviour_mu=torch.from_numpy(req.mu[:n].copy()),
        behaviour_std=torch.from_numpy(req.sigma[:n].copy()), behaviour_logp=torch.from_numpy(req.logp[:n].copy()),
        feedback=torch.from_numpy(rows.feedback.copy()), session_end=end,
        return_time=torch.where(end, torch.from_numpy(rt.astype(np.float32)), 0.0),
        next_obs=next_state, group=torch.from_numpy(req.group[:n].copy()),
    )


class PolicyStore:
    """The run directory's policies: ``policies/vNNNNN.pt`` (immutable) and ``current.pt`` (served)."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.dir = self.out / "policies"
        self.current = self.out / "current.pt"

    def path(self, version: int) -> Path:
        return self.dir / f"v{version:05d}.pt"

    def versions(self) -> list[int]:
        return sorted(int(p.stem[1:]) for p in self.dir.glob("v*.pt") if p.stem[1:].isdigit())

    def write(self, version: int, ckpt: dict[str, Any]) -> Path:
        path = self.path(version)
        atomic_torch_save(ckpt, path)
        return path

    def point_current(self, version: int) -> None:
        """Atomically replace ``current.pt`` with version ``version``'s bytes."""
        atomic_write_bytes(self.path(version).read_bytes(), self.current)

    def current_version(self) -> int | None:
        if not self.current.exists():
            return None
        return int(torch.load(self.current, map_location="cpu", weights_only=False).get("live_version", -1))


def version_number(version: str) -> int:
    """``"v00012"`` → 12 (what the ranker reports) ; anything else → −1."""
    v = str(version)
    return int(v[1:]) if v.startswith("v") and v[1:].isdigit() else -1


class ContinuousTrainer:
    """Consume transitions, update the agent, publish versions (see the module docstring).

    Args:
        out: the run directory (``policies/``, ``current.pt``, ``trainer/``).
        log: the event log (read only: request payloads).
        joiner_db: the joiner's database (read only: transitions).
        cfg: the trainer's configuration.
        horizon_days: K (the censored label).
    """

    def __init__(self, out: str | Path, log: EventLog, joiner_db: str | Path, cfg: TrainerConfig,
                 horizon_days: int) -> None:
        self.out, self.log, self.cfg, self.k = Path(out), log, cfg, int(horizon_days)
        self.store = PolicyStore(self.out)
        self.state_path = self.out / "trainer" / "state.pt"
        self.progress_path = self.out / "trainer" / "progress.json"
        self.consumed_path = self.out / "trainer" / "consumed.csv"
        self.joiner_db = Path(joiner_db)
        self.conn: sqlite3.Connection | None = None
        meta = log.meta()
        self.n_feedback = int(meta["n_feedback"])
        v0 = torch.load(self.store.path(0), map_location="cpu", weights_only=False)
        self.world = World(WorldConfig.from_dict(v0["world_config"]))
        torch.manual_seed(cfg.seed)
        self.agent = make_agent(cfg, int(meta["obs_dim"]), int(meta["k"]), len(meta["groups"]))
        self.buffer = ReplayBuffer(cfg.buffer_capacity, int(meta["obs_dim"]), int(meta["k"]), self.n_feedback)
        self.rng = torch.Generator().manual_seed(cfg.seed * 9973 + 17)
        self.cursor = self.n_trainable = self.updates = self.version = 0
        self.credit = 0.0
        self.label_ts = 0
        self.published: list[dict[str, Any]] = []
        if self.state_path.exists():
            self._restore()
        else:
            warm_start_actor(self.agent, policy_from_dict(v0["policy"]))
            self.agent.set_exploration(cfg.explore_std(0))

    # --- persistence -----------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self.conn is None:
            self.conn = connect(self.joiner_db, readonly=True)
        return self.conn

    def _state(self) -> dict[str, Any]:
        return {
            "agent": self.agent.state_dict(), "cursor": self.cursor, "n_trainable": self.n_trainable,
            "updates": self.updates, "version": self.version, "credit": self.credit, "label_ts": self.label_ts,
            "rng": self.rng.get_state(), "published": self.published, "config": self.cfg.to_dict(),
        }

    def _restore(self) -> None:
        state = torch.load(self.state_path, map_location="cpu", weights_only=False)
        if state["config"] != self.cfg.to_dict():
            raise ValueError(f"{self.state_path} was written by another trainer configuration")
        self.agent.load_state_dict(state["agent"])
        for key in ("cursor", "n_trainable", "updates", "version", "credit", "label_ts", "published"):
            setattr(self, key, state[key])
        self.rng.set_state(state["rng"])
        self.agent.set_exploration(self.cfg.explore_std(self.n_trainable))
        self._refill_buffer()
        if self.store.current_version() != self.version:  # killed between the state and current.pt
            self.store.point_current(self.version)

    def _trainable(self, rows: TransitionRows) -> np.ndarray:
        keep = rows.censored != CLOSED
        if self.cfg.train_arms == "treatment":
            keep &= rows.arm == 1
        return keep

    def _refill_buffer(self) -> None:
        """Put the last ``capacity`` trainable transitions up to the cursor back at their ring positions."""
        m = min(self.n_trainable, self.buffer.capacity)
        if m == 0:
            return
        arm = "AND arm = 1" if self.cfg.train_arms == "treatment" else ""
        first = self._connect().execute(
            f"SELECT MIN(tseq) FROM (SELECT tseq FROM transitions WHERE tseq <= ? AND censored != {CLOSED} {arm} "
            "ORDER BY tseq DESC LIMIT ?)", (self.cursor, m)).fetchone()[0]
        self.buffer.pos, self.buffer.size = (self.n_trainable - m) % self.buffer.capacity, 0
        after = int(first) - 1
        while after < self.cursor:
            rows = read_transitions(self._connect(), after, min(self.cfg.read_chunk, self.cursor - after),
                                    self.n_feedback)
            after = int(rows.tseq[-1])
            rows = rows.subset(self._trainable(rows))
            if len(rows):
                self.buffer.add(build_batch(rows, self.log, self.k))
        if self.buffer.size != m:
            raise RuntimeError(f"replay refill found {self.buffer.size} transitions, expected {m}")

    def _publish(self) -> None:
        """Write ``v{version+1}``, commit the state, then point ``current.pt`` at it."""
        version = self.version + 1
        ckpt = policy_checkpoint(
            self.agent.policy(), self.world, self.cfg.algo, f"v{version:05d}", live_version=version,
            updates=self.updates, transitions=self.n_trainable, cursor=self.cursor, label_ts=self.label_ts,
            published_wall=time.time(),
        )
        self.store.write(version, ckpt)
        self.version = version
        self.published.append({"version": version, "updates": self.updates, "transitions": self.n_trainable,
                               "cursor": self.cursor, "label_ts": self.label_ts, "wall": ckpt["published_wall"]})
        atomic_torch_save(self._state(), self.state_path)  # the commit point
        self.store.point_current(version)

    def _write_progress(self, done: bool = False) -> None:
        atomic_write_json({
            "cursor": self.cursor, "transitions": self.n_trainable, "updates": self.updates, "version": self.version,
            "label_ts": self.label_ts, "buffer": self.buffer.size, "wall": time.time(), "done": done,
            "pid": os.getpid(),
        }, self.progress_path)

    # --- learning --------------------------------------------------------------------------------
    def _train(self, stats: dict[str, float]) -> None:
        """Spend the update credit (one update per ``transitions_per_update`` transitions)."""
        cfg = self.cfg
        while self.credit >= 1.0:
            self.credit -= 1.0
            stats.update(self.agent.update(self.buffer.sample(cfg.batch_size, self.rng), self.rng))
            self.updates += 1
            if self.updates % cfg.publish_every == 0:
                self._publish()

    def consume(self, rows: TransitionRows) -> int:
        """Add a chunk of transitions (in ``tseq`` order) and train on it; returns trainable rows added."""
        cfg = self.cfg
        keep = self._trainable(rows)
        self.cursor = int(rows.tseq[-1])
        self.label_ts = max(self.label_ts, int(rows.label_ts.max()))
        sub = rows.subset(keep)
        n = len(sub)
        if n:
            batch = build_batch(sub, self.log, self.k)
            self.buffer.add(batch)
            self.agent.observe_returns(batch.return_time[batch.session_end])
            self.n_trainable += n
            self.agent.set_exploration(cfg.explore_std(self.n_trainable))
            if self.buffer.size >= max(cfg.learning_starts, cfg.batch_size):
                self.credit += n / cfg.transitions_per_update
        return n

    def step(self) -> int:
        """One round: spend leftover credit, then read, add and train on the next chunk."""
        stats: dict[str, float] = {}
        self._train(stats)  # credit left by a chunk that published mid-way (also after a restart)
        rows = read_transitions(self._connect(), self.cursor, self.cfg.read_chunk, self.n_feedback)
        if not len(rows):
            return 0
        self.consume(rows)
        self._note_consumed()
        self._train(stats)
        return len(rows)

    def _note_consumed(self) -> None:
        """Append ``cursor,wall`` to ``trainer/consumed.csv``: when each transition reached the buffer
        (latency statistics only; recovery never reads it)."""
        self.consumed_path.parent.mkdir(parents=True, exist_ok=True)
        with self.consumed_path.open("a") as f:
            f.write(f"{self.cursor},{time.time():.6f}\n")

    def _joiner_finished(self) -> bool:
        row = self._connect().execute("SELECT value FROM joiner_meta WHERE key = 'finished'").fetchone()
        return bool(row) and row[0] == "true"

    def run(self, until_finished: bool = True, max_rounds: int | None = None) -> None:
        """Train until the joiner has finished and every transition is consumed (or SIGTERM)."""
        stop = _StopFlag()
        rounds, last_progress = 0, 0.0
        while not stop.set:
            n = self.step()
            rounds += 1
            now = time.monotonic()
            if now - last_progress > 0.2:
                self._write_progress()
                last_progress = now
            if max_rounds is not None and rounds >= max_rounds:
                break
            if n == 0:
                if until_finished and self._joiner_finished() and self.step() == 0:
                    break
                time.sleep(self.cfg.poll_seconds)
        if not stop.set:
            last = self.published[-1]["updates"] if self.published else 0
            if self.updates > last:
                self._publish()  # the last updates, as a final version
            else:
                atomic_torch_save(self._state(), self.state_path)  # commit the cursor
        self._write_progress(done=not stop.set)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
