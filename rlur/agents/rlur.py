"""RLUR: Reinforcing User Retention (Cai et al., WWW 2023, arXiv 2302.01724), top to bottom.

Read next to the paper (section numbers refer to it):

* MDP (§2): one step per request; the reward is the returning time ``T`` at a session's last
  request, 0 otherwise. We store it negated (``r = −T``), so every critic is a value to *maximise*
  and the paper's actor loss ``β_T·Q_T − β_I·Q_I`` becomes ``−β_T·Q_T − β_I·Q_I``.
* Retention critic ``Q_T`` (§3.1): TD learning with discount 1 inside a session and γ at the
  session boundary (:func:`session_discount`), twin critics and target networks (TD3-style).
* Immediate critic ``Q_I`` (§3.2): heuristic reward = the slate's watch time and interactions, plus
  the RND intrinsic reward (:func:`rnd_error`) which enters ``Q_I`` only, never ``Q_T``.
* Uncertainty (§3.3): the return time is normalised by a Markov-inequality bound,
  ``r = clip(T / ((1 − T'(x)) · T_β), 0, α)`` (:func:`normalised_return`), where
  ``T'(x) ≈ P(T ≤ T_β | x)`` is a classifier and ``T_β`` the running β-quantile of returning times.
* Bias (§3.4): one actor per activity group (``GroupedMLP``), each trained on its own group's
  samples with its own averaged loss. Critics are shared (the group is in the state): every group's
  value estimate then learns from all traffic, while no group's policy gradient is drowned by the
  high-activity majority. Whether the paper splits its critics too is open: ``group_critics`` gives
  each group its own ``Q_T`` and ``Q_I`` (the ``rlur-group-critics`` benchmark row).
* Instability (§3.5): soft regularisation: each sample's actor loss is weighted by
  ``exp(max(λ·(log π(a|s) − log π_b(a|s)), 0))`` (:func:`soft_regularisation_weight`), with the
  behaviour log-density logged when the action was served. The weight is computed without
  gradient, normalised to mean 1 over the batch and capped (both explicit in the config).

* Beyond the paper, off by default: the actor's objective is flat across much of the action box and
  its best points for a state can sit in different corners (docs/critic.md, section 10). With
  ``candidate_explore`` a share of served actions are pure weightings (the box's corners), and with
  ``candidate_pull`` the actor is pulled towards the corner the critics value most where that beats
  μ(s) (:func:`candidate_pull`): the ``rlur-candidates`` benchmark row.

Every component can be switched off (``RLURConfig``); RLUR-naive is the retention critic alone.
``σ`` of the Gaussian policy is the exploration scale, annealed by the trainer: the paper gives
the actor a σ output but not its objective, and the deterministic policy gradient trains only μ.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rlur.agents.fixed import candidate_weightings
from rlur.agents.networks import GaussianActor, QCritic, adam, gaussian_log_prob, mlp, polyak_update
from rlur.agents.policy import GaussianPolicy
from rlur.training.buffer import Batch

__all__ = [
    "HEURISTICS",
    "KUAIRAND_MEDIAN_VIDEO_SECONDS",
    "RLURAgent",
    "RLURConfig",
    "candidate_pull",
    "explore_candidates",
    "immediate_reward",
    "normalised_return",
    "rnd_error",
    "session_discount",
    "soft_regularisation_weight",
    "td_target",
]


@dataclass
class RLURConfig:
    """Hyper-parameters of RLUR. Paper values where the paper gives them."""

    gamma: float = 0.95
    """Discount at the session boundary (paper: 0.95); inside a session the discount is 1."""
    gamma_immediate: float = 0.9
    """Per-request discount of the immediate critic Q_I (open in the paper)."""
    beta_retention: float = 1.0
    """β_T, weight of Q_T in the actor loss (paper: 1)."""
    beta_immediate: float = 0.3
    """β_I, weight of Q_I in the actor loss (paper: 1, on its own reward scale; see README)."""
    immediate: bool = True
    """Use the immediate critic Q_I (``--no-immediate`` switches it off)."""
    rnd: bool = True
    """Add the RND intrinsic reward to Q_I's reward (``--no-rnd``)."""
    rnd_coef: float = 0.1
    """Weight of the intrinsic reward (normalised to unit running mean) in Q_I's reward."""
    rnd_state: str = "current"
    """Whose novelty the intrinsic reward of a transition pays: the request's own state
    (``"current"``, as first shipped: that part of the reward does not depend on the action) or the
    state the action leads to (``"next"``, as in Burda et al.'s RND). The paper says only "the user
    state"."""
    normalise: bool = True
    """Normalise the return time by the Markov bound (``--no-normalise``)."""
    return_quantile: float = 0.6
    """β of T_β, the quantile of observed returning times (paper: 60th percentile)."""
    clip_alpha: float = 3.0
    """α, upper clip of the normalised return (paper: 3)."""
    groups: bool = True
    """One actor per activity group (``--no-groups``)."""
    group_critics: bool = False
    """One retention and one immediate critic per activity group as well (whether the paper splits
    its critics is open). Off: the critics are shared and see the group in the state."""
    soft_reg: bool = True
    """Soft regularisation of the actor loss (``--no-soft-reg``)."""
    soft_reg_lambda: float = 1.5
    """λ of the soft-regularisation weight (paper: 1.5)."""
    soft_reg_cap: float = 5.0
    """Cap of the batch-normalised soft-regularisation weight (explicit choice, not in the paper)."""
    hidden: tuple[int, ...] = (128, 128)
    actor_lr: float = 3e-4
    critic_lr: float = 1e-3
    tau: float = 0.005
    """Polyak rate of the target networks."""
    policy_delay: int = 2
    """Actor and target updates every this many critic updates (TD3)."""
    target_noise: float = 0.1
    target_noise_clip: float = 0.3
    heuristic: str = "paper"
    """The immediate critic's heuristic reward (:func:`immediate_reward`): ``"paper"`` (watch time
    and the four interactions, as the paper states it) or ``"hand-weighted"`` (the first release's)."""
    candidate_explore: float = 0.0
    """Share of served actions replaced by a pure weighting (``candidate_weightings``), drawn
    uniformly: exploration of the action box's corners. Not in the paper; 0 switches it off."""
    candidate_pull: float = 0.0
    """Weight of the actor's pull towards the pure weighting the critics value most in a state, where
    that beats μ(s) (:func:`candidate_pull`). Not in the paper; 0 switches it off."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.candidate_explore <= 1.0:
            raise ValueError(f"candidate_explore must be in [0, 1], got {self.candidate_explore}")
        if not self.candidate_pull >= 0.0:
            raise ValueError(f"candidate_pull must be non-negative, got {self.candidate_pull}")
        if self.heuristic not in HEURISTICS:
            raise ValueError(f"heuristic must be one of {', '.join(HEURISTICS)}, got {self.heuristic!r}")
        if self.rnd_state not in ("current", "next"):
            raise ValueError(f"rnd_state must be 'current' or 'next', got {self.rnd_state!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RLURConfig:
        """The config a run saved. Runs saved before ``heuristic`` existed used the first release's
        reward (``watch_scale`` 300 s, long views and hate): they load as ``"hand-weighted"``."""
        d = dict(d)
        if "watch_scale" in d:
            scale = d.pop("watch_scale")
            if scale != 300.0:
                raise ValueError(f"a saved RLUR config with watch_scale {scale} has no heuristic reward today")
            d.setdefault("heuristic", "hand-weighted")
        return cls(**{**d, "hidden": tuple(d.get("hidden", (128, 128)))})


# ---------------------------------------------------------------------------------------------
# The maths, one function per equation (unit-tested by hand in tests/test_rlur_math.py).
# ---------------------------------------------------------------------------------------------
def session_discount(session_end: torch.Tensor, gamma: float) -> torch.Tensor:
    """``γ_it = γ`` at a session's last request, 1 inside a session (paper §3.1).

    Discounting every request would make the return signal vanish before it reaches a session's
    early requests; discounting across sessions only keeps the chain infinite-horizon.
    """
    return torch.where(session_end, torch.as_tensor(gamma, dtype=torch.float32), torch.ones(()))


def td_target(reward: torch.Tensor, discount: torch.Tensor, next_value: torch.Tensor) -> torch.Tensor:
    """``y = r + γ_it · Q'(s', π'(s'))``. No "done" mask: sessions end, the MDP never does."""
    return reward + discount * next_value


def normalised_return(
    return_time: torch.Tensor, p_short: torch.Tensor, t_beta: float | torch.Tensor, alpha: float = 3.0,
    eps: float = 1e-6,
) -> torch.Tensor:
    """``clip(T / ((1 − T'(x)) · T_β), 0, α)`` (paper §3.3).

    Markov's inequality gives ``E[T|x] ≥ T_β · P(T > T_β | x) = T_β (1 − T'(x))``: dividing by that
    bound removes the part of T a user's own habits explain. As ``T'(x) → 1`` the bound → 0 and the
    reward saturates at α (``eps`` keeps the division finite).
    """
    bound = (1.0 - p_short).clamp(min=eps) * t_beta
    return (return_time / bound).clamp(0.0, alpha)


def rnd_error(predictor_out: torch.Tensor, target_out: torch.Tensor) -> torch.Tensor:
    """``‖E(u) − E'(u)‖²`` per row: both the RND loss and the intrinsic reward (paper §3.2)."""
    return (predictor_out - target_out).pow(2).sum(-1)


def soft_regularisation_weight(
    logp: torch.Tensor, behaviour_logp: torch.Tensor, lam: float = 1.5, cap: float | None = 5.0,
    normalise: bool = True,
) -> torch.Tensor:
    """``exp(max(λ · (log π(a|s) − log π_b(a|s)), 0))``, no gradient (paper §3.5).

    With ``normalise`` the weights are divided by their batch mean (so the actor's step size does
    not depend on how far the policy has drifted) and then capped at ``cap``.
    """
    with torch.no_grad():
        w = torch.exp((lam * (logp - behaviour_logp)).clamp(min=0.0, max=20.0))
        if normalise:
            w = w / w.mean()
        if cap is not None:
            w = w.clamp(max=cap)
    return w


def candidate_pull(
    value: Callable[..., torch.Tensor], obs: torch.Tensor, mu: torch.Tensor, candidates: torch.Tensor,
    group: torch.Tensor | None = None,
) -> torch.Tensor:
    """``1[V(s, c*) > V(s, μ)] · ‖μ(s) − c*‖²`` per row, with ``c* = argmax_c V(s, c)`` over the
    candidate actions ``(M, k)`` and ``V`` the actor's objective (not in the paper).

    The deterministic policy gradient follows ``∇_a V`` where μ is. Where the best weighting for a
    state sits in another corner of the action box, across a plateau (docs/critic.md, section 10),
    that gradient does not lead there; this pull lets the actor jump to what the critics already
    value most. The comparison runs without gradient; the pull's gradient reaches μ only. With
    ``group`` (per-group critics), ``V`` is called as ``V(s, a, group)``.
    """
    n, m = obs.shape[0], candidates.shape[0]
    own = () if group is None else (group,)  # the rows' groups, for per-group critics
    repeated = () if group is None else (group.repeat_interleave(m, 0),)
    with torch.no_grad():
        scores = value(obs.repeat_interleave(m, 0), candidates.repeat(n, 1), *repeated).view(n, m)
        best_value, best = scores.max(1)
        better = (best_value > value(obs, mu.detach(), *own)).float()
    return better * (mu - candidates[best]).pow(2).sum(-1)


def explore_candidates(
    action: torch.Tensor, candidates: torch.Tensor, share: float, generator: torch.Generator,
) -> torch.Tensor:
    """Each row of ``action (N, k)`` replaced, with probability ``share``, by one of ``candidates
    (M, k)`` drawn uniformly: exploration of the pure weightings (not in the paper)."""
    n = action.shape[0]
    pick = torch.rand(n, generator=generator) < share
    drawn = candidates[torch.randint(0, candidates.shape[0], (n,), generator=generator)]
    return torch.where(pick[:, None], drawn, action)


#: Watch seconds per unit of the paper's heuristic reward: KuaiRand-Pure's median video duration
#: (81.17 s over the 7,344 videos with a duration in ``video_features_basic_pure.csv``), so a video
#: watched through counts about as much as one interaction. Taken from the data, not the simulator.
KUAIRAND_MEDIAN_VIDEO_SECONDS = 81.17
#: The heuristic rewards ``I(s, a)`` of the immediate critic (``RLURConfig.heuristic``).
HEURISTICS = ("paper", "hand-weighted")


def immediate_reward(feedback: torch.Tensor, heuristic: str = "paper") -> torch.Tensor:
    """Heuristic immediate response ``I(s, a)`` of a slate (paper §3.2).

    ``feedback (N, 1 + R)`` = watch seconds, then counts of BEHAVIOURS (click, long_view, like,
    follow, comment, forward, profile_enter, hate).

    * ``"paper"``: "watch time and interactions": ``watch / 81.17 s + like + follow + comment +
      forward``, every term weighted 1 (watch time in KuaiRand-Pure median durations).
    * ``"hand-weighted"``: the first release's reward, ``watch / 300 s + long_view / 6 + like +
      follow + comment + forward − 2·hate``. Its long-view and hate terms are not in the paper and
      were chosen while the simulator's satisfaction was in view.
    """
    interactions = feedback[:, 3:7].sum(1)  # like, follow, comment, forward
    if heuristic == "paper":
        return feedback[:, 0] / KUAIRAND_MEDIAN_VIDEO_SECONDS + interactions
    if heuristic == "hand-weighted":
        return feedback[:, 0] / 300.0 + feedback[:, 2] / 6.0 + interactions - 2.0 * feedback[:, 8]
    raise ValueError(f"unknown heuristic {heuristic!r}; choose from {', '.join(HEURISTICS)}")


def quantile(x: torch.Tensor, q: float) -> float:
    """``float(torch.quantile(x, q))`` (linear interpolation) for a finite 1-D ``x``, bit for bit, by
    two selections instead of a sort: a third of the time on the 20,000 returns ``T_β`` reads."""
    rank = torch.tensor(q, dtype=x.dtype) * (x.numel() - 1)  # as torch.quantile: float32 rank
    below, above = int(rank), int(torch.ceil(rank))
    low = torch.kthvalue(x, below + 1).values
    high = low if above == below else torch.kthvalue(x, above + 1).values
    return float(torch.lerp(low, high, rank - below))


# ---------------------------------------------------------------------------------------------
class RLURAgent:
    """Actor, retention critic, immediate critic, RND and the return classifier, with optimisers."""

    def __init__(self, obs_dim: int, k: int, n_groups: int, config: RLURConfig | None = None) -> None:
        self.config = cfg = config or RLURConfig()
        self.obs_dim, self.k, self.n_groups = obs_dim, k, n_groups
        actor_groups = n_groups if cfg.groups else 1
        self.actor = GaussianActor(obs_dim, k, actor_groups, cfg.hidden)
        self.actor_target = copy.deepcopy(self.actor)
        critic_groups = n_groups if cfg.group_critics else 1
        self.critic_t = QCritic(obs_dim, k, cfg.hidden, critic_groups)
        self.critic_t_target = copy.deepcopy(self.critic_t)
        self.actor_opt = adam(self.actor.parameters(), cfg.actor_lr)
        critic_params = list(self.critic_t.parameters())
        if cfg.immediate:
            self.critic_i = QCritic(obs_dim, k, cfg.hidden, critic_groups)
            self.critic_i_target = copy.deepcopy(self.critic_i)
            critic_params += list(self.critic_i.parameters())
        self.critic_opt = adam(critic_params, cfg.critic_lr)
        if cfg.immediate and cfg.rnd:
            self.rnd_target = mlp(obs_dim, 32, (64,)).requires_grad_(False)
            self.rnd_predictor = mlp(obs_dim, 32, (64,))
            self.rnd_opt = adam(self.rnd_predictor.parameters(), 1e-3)
            self.rnd_scale = torch.ones(())  # running mean of the RND error
        if cfg.normalise:
            self.classifier = mlp(obs_dim, 1, (64, 64))
            self.classifier_opt = adam(self.classifier.parameters(), 1e-3)
        #: The pure weightings the candidate options explore and pull towards (``RLURConfig``).
        self.candidates = candidate_weightings(k)
        self.recent_returns = torch.zeros(20_000)
        self.n_returns = 0
        self.updates = 0

    # --- returning-time statistics -----------------------------------------------------------
    def observe_returns(self, return_time: torch.Tensor) -> None:
        """Feed newly observed returning times (days) into the running T_β quantile."""
        n = return_time.numel()
        if n == 0:
            return
        cap = self.recent_returns.numel()
        idx = (torch.arange(n) + self.n_returns) % cap
        self.recent_returns[idx] = return_time.float()
        self.n_returns += n

    def t_beta(self) -> float:
        n = min(self.n_returns, self.recent_returns.numel())
        if n == 0:
            return 1.0
        return max(quantile(self.recent_returns[:n], self.config.return_quantile), 1e-3)

    # --- the update (one block per equation) --------------------------------------------------
    def retention_reward(self, batch: Batch) -> tuple[torch.Tensor, dict]:
        """``r_T = −T`` (or ``−clip(T / ((1 − T'(x)) T_β), 0, α)``) at session ends, 0 elsewhere."""
        cfg, end, stats = self.config, batch.session_end, {}
        t = batch.return_time
        if cfg.normalise:
            t_beta = self.t_beta()
            logits = self.classifier(batch.obs).squeeze(-1)
            if bool(end.any()):  # T'(x) ≈ P(T ≤ T_β | x), binary cross-entropy on session ends
                label = (t[end] <= t_beta).float()
                clf_loss = F.binary_cross_entropy_with_logits(logits[end], label)
                self.classifier_opt.zero_grad()
                clf_loss.backward()
                self.classifier_opt.step()
                stats["train/classifier_loss"] = clf_loss.item()
            p_short = torch.sigmoid(logits.detach())
            t = normalised_return(t, p_short, t_beta, cfg.clip_alpha)
            stats["train/t_beta"] = t_beta
        return torch.where(end, -t, torch.zeros_like(t)), stats

    def intrinsic_reward(self, batch: Batch) -> tuple[torch.Tensor, dict]:
        """RND: train ``E`` towards the fixed ``E'`` on the states ``rnd_state`` names; the
        prediction error on them is the bonus."""
        states = batch.next_obs if self.config.rnd_state == "next" else batch.obs
        err = rnd_error(self.rnd_predictor(states), self.rnd_target(states))
        loss = err.mean()
        self.rnd_opt.zero_grad()
        loss.backward()
        self.rnd_opt.step()
        with torch.no_grad():
            self.rnd_scale = 0.99 * self.rnd_scale + 0.01 * err.mean()
        return err.detach() / self.rnd_scale.clamp(min=1e-8), {"train/rnd_loss": loss.item()}

    def update(self, batch: Batch, generator: torch.Generator) -> dict[str, float]:
        cfg = self.config
        r_t, stats = self.retention_reward(batch)
        with torch.no_grad():
            # Target policy smoothing (TD3): π'(s') + clipped noise, inside the action box.
            mu_next, _ = self.actor_target(batch.next_obs, batch.group)
            noise = (torch.randn(mu_next.shape, generator=generator) * cfg.target_noise).clamp(
                -cfg.target_noise_clip, cfg.target_noise_clip)
            a_next = (mu_next + noise).clamp(-1.0, 1.0)
            # Retention critic target: discount only at the session boundary (§3.1).
            q1n, q2n = self.critic_t_target(batch.next_obs, a_next, batch.group)
            y_t = td_target(r_t, session_discount(batch.session_end, cfg.gamma), torch.min(q1n, q2n))
        q1, q2 = self.critic_t(batch.obs, batch.action, batch.group)
        critic_loss = F.mse_loss(q1, y_t) + F.mse_loss(q2, y_t)
        stats["train/critic_T_loss"] = critic_loss.item()
        stats["train/Q_T"] = q1.mean().item()

        if cfg.immediate:
            r_i = immediate_reward(batch.feedback, cfg.heuristic)
            if cfg.rnd:
                bonus, rnd_stats = self.intrinsic_reward(batch)
                stats.update(rnd_stats)
                r_i = r_i + cfg.rnd_coef * bonus
            with torch.no_grad():
                i1n, i2n = self.critic_i_target(batch.next_obs, a_next, batch.group)
                y_i = td_target(r_i, torch.full_like(r_i, cfg.gamma_immediate), torch.min(i1n, i2n))
            i1, i2 = self.critic_i(batch.obs, batch.action, batch.group)
            loss_i = F.mse_loss(i1, y_i) + F.mse_loss(i2, y_i)
            critic_loss = critic_loss + loss_i
            stats["train/critic_I_loss"] = loss_i.item()

        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()

        self.updates += 1
        if self.updates % cfg.policy_delay == 0:
            stats.update(self.update_actor(batch))
            polyak_update(self.actor_target, self.actor, cfg.tau)
            polyak_update(self.critic_t_target, self.critic_t, cfg.tau)
            if cfg.immediate:
                polyak_update(self.critic_i_target, self.critic_i, cfg.tau)
        return stats

    def actor_objective(
        self, obs: torch.Tensor, action: torch.Tensor, group: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``β_T Q_T(s, a) + β_I Q_I(s, a)`` (first twins): what the actor maximises (§3.2)."""
        cfg = self.config
        value = cfg.beta_retention * self.critic_t.q1(obs, action, group)
        if cfg.immediate:
            value = value + cfg.beta_immediate * self.critic_i.q1(obs, action, group)
        return value

    def update_actor(self, batch: Batch) -> dict[str, float]:
        """DDPG-style actor loss on μ: ``−β_T Q_T(s, μ(s)) − β_I Q_I(s, μ(s))``, plus the optional
        candidate pull, weighted (§3.5)."""
        cfg = self.config
        mu, std = self.actor(batch.obs, batch.group)
        per_sample = -self.actor_objective(batch.obs, mu, batch.group)
        if cfg.candidate_pull:
            per_sample = per_sample + cfg.candidate_pull * candidate_pull(
                self.actor_objective, batch.obs, mu, self.candidates, batch.group)
        stats: dict[str, float] = {}
        if cfg.soft_reg:
            logp = gaussian_log_prob(batch.action, mu.detach(), std.detach())
            weight = soft_regularisation_weight(logp, batch.behaviour_logp, cfg.soft_reg_lambda, cfg.soft_reg_cap)
            per_sample = per_sample * weight
            stats["train/soft_reg_weight_max"] = float(weight.max())
        if cfg.groups:
            # Each group's actor gets its own mean loss, whatever its share of the traffic (§3.4).
            sums = per_sample.new_zeros(self.n_groups).index_add(0, batch.group, per_sample)
            counts = torch.bincount(batch.group, minlength=self.n_groups).clamp(min=1)
            loss = (sums / counts).sum()
        else:
            loss = per_sample.mean()
        self.actor_opt.zero_grad()
        # Gradients for the actor only: the critics' would be discarded before their next step.
        loss.backward(inputs=list(self.actor.parameters()))
        self.actor_opt.step()
        stats["train/actor_loss"] = loss.item()
        return stats

    # --- deployment and persistence ------------------------------------------------------------
    def set_exploration(self, std: float) -> None:
        self.actor.set_std(std)

    def policy(self) -> GaussianPolicy:
        return GaussianPolicy(copy.deepcopy(self.actor))

    def modules(self) -> dict[str, nn.Module | torch.optim.Optimizer]:
        names = ["actor", "actor_target", "critic_t", "critic_t_target", "actor_opt", "critic_opt"]
        if self.config.immediate:
            names += ["critic_i", "critic_i_target"]
            if self.config.rnd:
                names += ["rnd_target", "rnd_predictor", "rnd_opt"]
        if self.config.normalise:
            names += ["classifier", "classifier_opt"]
        return {n: getattr(self, n) for n in names}

    def state_dict(self) -> dict:
        state = {n: m.state_dict() for n, m in self.modules().items()}
        state.update(recent_returns=self.recent_returns.clone(), n_returns=self.n_returns, updates=self.updates)
        if self.config.immediate and self.config.rnd:
            state["rnd_scale"] = self.rnd_scale.clone()
        return state

    def load_state_dict(self, state: dict) -> None:
        for n, m in self.modules().items():
            m.load_state_dict(state[n])
        self.recent_returns = state["recent_returns"].clone()
        self.n_returns, self.updates = state["n_returns"], state["updates"]
        if "rnd_scale" in state:
            self.rnd_scale = state["rnd_scale"].clone()
