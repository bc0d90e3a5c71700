"""Replay buffer of typed transitions, with return-time rewards attached when the user returns.

In production the returning time of a session's last request is only known when the user comes
back, hours or days later. :class:`DelayedReturnCollector` reproduces that: a step's transitions
wait in a staging area and enter the buffer one step later, when each user's next request arrives
(for a user whose session ended, that request is the first of the next session, which is when the
returning time is observed). Only then can a transition be sampled.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from rlur.sim.env import StepResult

__all__ = ["Batch", "DelayedReturnCollector", "ReplayBuffer"]


@dataclass
class Batch:
    """A batch of transitions (N rows). Shapes in comments; R = number of behaviours."""

    obs: torch.Tensor  # (N, d) float32: state s
    action: torch.Tensor  # (N, k) float32: the served action a ~ N(μ_b, σ_b)
    behaviour_mu: torch.Tensor  # (N, k) μ_b of the policy version that served it
    behaviour_std: torch.Tensor  # (N, k) σ_b
    behaviour_logp: torch.Tensor  # (N,) log p_b(a|s), for the soft regularisation
    feedback: torch.Tensor  # (N, 1 + R) immediate feedback: watch seconds, behaviour counts
    session_end: torch.Tensor  # (N,) bool: last request of its session
    return_time: torch.Tensor  # (N,) days until the next session (0 where not session_end)
    next_obs: torch.Tensor  # (N, d) s': next request's state (first of next session at a boundary)
    group: torch.Tensor  # (N,) long: activity group

    def __len__(self) -> int:
        return self.obs.shape[0]

    def to_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class ReplayBuffer:
    """A fixed-capacity FIFO ring buffer over :class:`Batch` fields; sampling is uniform."""

    def __init__(self, capacity: int, obs_dim: int, k: int, n_feedback: int) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.size = 0
        self.pos = 0
        f32 = torch.float32
        self.data = {
            "obs": torch.zeros(capacity, obs_dim, dtype=f32),
            "action": torch.zeros(capacity, k, dtype=f32),
            "behaviour_mu": torch.zeros(capacity, k, dtype=f32),
            "behaviour_std": torch.zeros(capacity, k, dtype=f32),
            "behaviour_logp": torch.zeros(capacity, dtype=f32),
            "feedback": torch.zeros(capacity, n_feedback, dtype=f32),
            "session_end": torch.zeros(capacity, dtype=torch.bool),
            "return_time": torch.zeros(capacity, dtype=f32),
            "next_obs": torch.zeros(capacity, obs_dim, dtype=f32),
            "group": torch.zeros(capacity, dtype=torch.long),
        }

    def add(self, batch: Batch) -> None:
        """Append ``batch`` (vectorised; wraps around at capacity)."""
        n = len(batch)
        if n > self.capacity:
            raise ValueError(f"batch of {n} exceeds capacity {self.capacity}")
        idx = (torch.arange(n) + self.pos) % self.capacity
        for name, value in batch.to_dict().items():
            self.data[name][idx] = value
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        if self.size == 0:
            raise ValueError("cannot sample from an empty buffer")
        idx = torch.randint(0, self.size, (n,), generator=generator)
        return Batch(**{name: value.index_select(0, idx) for name, value in self.data.items()})  # 3× value[idx]

    def state_dict(self) -> dict:
        return {"size": self.size, "pos": self.pos, "data": {k: v[: self.size].clone() for k, v in self.data.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.size, self.pos = state["size"], state["pos"]
        for k, v in state["data"].items():
            self.data[k][: len(v)] = v


class DelayedReturnCollector:
    """Stage each step's transitions until the users' next requests arrive, then store them.

    ``stage(...)`` is called after every environment step. The previous step's staged
    transitions get their returning time (observed now: the user's next request has arrived)
    and go into the buffer; the current step's are staged in turn.
    """

    def __init__(self, buffer: ReplayBuffer) -> None:
        self.buffer = buffer
        self._staged: Batch | None = None
        self._pending_return: torch.Tensor | None = None

    def stage(
        self, obs: torch.Tensor, served: dict[str, torch.Tensor], result: StepResult,
    ) -> None:
        """Record one step: ``obs`` (state served), ``served`` = {action, mu, std, log_prob}."""
        self.flush()
        self._staged = Batch(
            obs=obs, action=served["action"], behaviour_mu=served["mu"], behaviour_std=served["std"],
            behaviour_logp=served["log_prob"], feedback=result.feedback.float(),
            session_end=result.session_end.clone(), return_time=torch.zeros(obs.shape[0]),
            next_obs=result.obs, group=result.group.clone(),
        )
        # The simulator knows the return already; it is held back until the user's next request.
        self._pending_return = torch.nan_to_num(result.return_time, nan=0.0)

    def flush(self) -> None:
        """Attach the observed returns to the staged transitions and move them to the buffer."""
        if self._staged is None:
            return
        self._staged.return_time = torch.where(self._staged.session_end, self._pending_return, 0.0)
        self.buffer.add(self._staged)
        self._staged, self._pending_return = None, None
