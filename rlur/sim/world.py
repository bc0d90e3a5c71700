"""The built-in world: users, videos and the true response model behind them.

Everything here is drawn from ``WorldConfig.world_seed`` so that a world can be rebuilt bit for bit
from its config. The world is static; the per-user dynamic state lives in :mod:`rlur.sim.env`.

Design notes (why the world looks like this; see ``docs/simulator.md`` for the full reference):

* Engagement and retention pull apart. Click-bait videos raise clicks and lower long views, raise
  hate and lower satisfaction; a slate that repeats the user's favourite topic breeds fatigue, which
  the point-wise predictions cannot see.
* The best fusion weighting depends on the user's state: activity groups value behaviours
  differently (heavy users tire of repetition, low-activity users punish click-bait, new users are
  won over by follows), and fatigue inside a session shifts the best weighting away from the
  affinity-driven scores; middle-activity users finish long videos while fresh and drop them when
  tired, so theirs turns from watch time to long views and likes as a session wears on.
* Long-term state carries across sessions (``habit``), so a discount ``γ > 0`` across sessions pays.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

__all__ = [
    "BEHAVIOURS",
    "CLASSIC_LONG_TASTE",
    "GROUPS",
    "KUAIRAND_RETURN_DAY_SHARE",
    "SCORE_NAMES",
    "WORLD_PRESETS",
    "World",
    "WorldConfig",
]

#: Sampled binary responses per shown video (watch time is sampled separately, in seconds).
BEHAVIOURS: tuple[str, ...] = (
    "click", "long_view", "like", "follow", "comment", "forward", "profile_enter", "hate",
)
#: The k = 8 point-wise predicted scores the action weights (the paper's list, in its order).
SCORE_NAMES: tuple[str, ...] = (
    "watch_time", "click", "long_view", "like", "follow", "forward", "comment", "profile_enter",
)
#: Activity groups, KuaiRand's ``user_active_degree`` collapsed (see ``GROUP_OF_ACTIVE_DEGREE``).
GROUPS: tuple[str, ...] = ("high", "middle", "low", "new")

#: KuaiRand's ``user_active_degree`` → rlur group.
GROUP_OF_ACTIVE_DEGREE: dict[str, str] = {
    "full_active": "high",
    "high_active": "middle",
    "middle_active": "low",
    "low_active": "low",
    "single_low_active": "low",
    "30day_retention": "low",
    "UNKNOWN": "low",
    "2_14_day_new": "new",
    "day_new": "new",
}

#: Share of return gaps (days between consecutive active days) in KuaiRand-Pure: days 1..10, >10.
KUAIRAND_RETURN_DAY_SHARE: tuple[float, ...] = (
    0.617, 0.165, 0.079, 0.047, 0.031, 0.021, 0.014, 0.009, 0.006, 0.004, 0.007,
)
#: KuaiRand-Pure behaviour rates per shown video (standard logs).
KUAIRAND_BEHAVIOUR_RATE: dict[str, float] = {
    "click": 0.4597, "long_view": 0.3318, "like": 0.01848, "comment": 0.00255,
    "forward": 0.00096, "follow": 0.00107, "hate": 0.00049,
}

# Index of each binary behaviour inside BEHAVIOURS, used by the response model.
_B = {name: i for i, name in enumerate(BEHAVIOURS)}


def _group_mix_default() -> tuple[float, ...]:
    # KuaiRand-Pure user_active_degree counts, collapsed: high 17,959; middle 6,158;
    # low 2,133 + 300 + 68 + 15 + 6 = 2,522; new 635 + 11 = 646 (of 27,285 users).
    return (17959 / 27285, 6158 / 27285, 2522 / 27285, 646 / 27285)


@dataclass
class WorldConfig:
    """Parameters of the built-in world. Every field has a default; ``world_seed`` draws the rest."""

    world_seed: int = 0
    """Seed of every random world parameter (videos, per-video prediction errors)."""
    n_videos: int = 5000
    """Catalogue size."""
    n_topics: int = 24
    """Number of topics; a video has one topic, a user an interest vector over topics."""
    n_candidates: int = 200
    """Candidates per request from the candidate stage (C)."""
    slate_size: int = 6
    """Videos shown per request (the paper's top 6)."""
    max_return_day: int = 10
    """K: return days 1..K are reported individually, later returns as '>K'."""
    return_horizon_days: int = 30
    """Hazards are drawn up to this many days; a user who has not returned by then returns on it."""
    group_mix: tuple[float, ...] = field(default_factory=_group_mix_default)
    """Share of each activity group (high, middle, low, new) in a sampled population."""
    clickbait_share: float = 0.15
    """Share of click-bait videos (more clicks, fewer long views, more hate, less satisfaction)."""
    prediction_noise: float = 0.5
    """Std of the fixed per-video logit error of the point-wise prediction models."""
    return_noise: float = 0.5
    """Std of exogenous noise on the return propensity per session (the paper's uncertainty)."""
    max_session_depth: int = 60
    """A session is cut after this many requests (a safety net; the leave module ends most earlier)."""
    max_opens_per_day: int = 6
    """No more than this many sessions (app opens) start on one calendar day."""
    weight_max: float = 4.0
    """Action a ∈ [-1, 1]^k maps to fusion weights w = weight_max · (a + 1) / 2 ∈ [0, weight_max]^k."""
    score_scale: str = "mean"
    """What each predicted score is divided by before weighting (``World.score_ref``): ``"mean"``, its
    typical value (the default world), or ``"spread"``, its typical standard deviation across one
    request's candidates, so that a unit of weight moves every score's say in the ranking equally."""
    # Calibration constants: chosen by ``benchmarks/calibrate.py`` so that the uniform policy
    # reproduces KuaiRand's behaviour rates and return-day histogram (see the README).
    behaviour_bias: tuple[float, ...] = (0.208, -0.749, -6.416, -7.789, -7.556, -9.463, -5.477, -8.976)
    """Intercept of each behaviour's logit, in BEHAVIOURS order."""
    return_day_bias: tuple[float, ...] = (0.121, -0.378, -0.185)
    """Hazard-logit offset for day 1, day 2 and days ≥ 3 of the return model."""
    reopen_bias: float = -0.911
    """Logit of reopening the app on the same day after a session (app opens > DAU)."""
    leave_bias: float = -3.098
    """Intercept of the per-request leave logit."""
    sat_reference: tuple[float, ...] = (0.468, 0.343, 0.647, 0.25)
    """Typical per-request satisfaction of each group under the uniform policy (calibrated)."""
    quality_effect: float = 1.5
    """How strongly a session's satisfaction (relative to its group's reference) moves the return."""
    fatigue_regret: float = 0.0
    """How much each unit of fatigue lowers the satisfaction of 81 s of watching, for every group.
    0 in the default world; the ``tired`` preset (:meth:`preset`) turns it on."""
    fatigue_skip: float = 0.0
    """How much each unit of fatigue lowers the click and long-view logits of a long video, per unit
    of its duration z-score above the mean: tired users skip long videos. 0 in the default world; the
    ``weary`` preset (:meth:`preset`) turns it on."""
    habit_from_time: float = 0.0
    """Weight of a session's time spent (watch seconds per shown video / 81 s, relative to its group's
    level under uniform weights, ``time_reference``) in the target of the long-term habit. Habits form
    from time spent even where it was not enjoyed, so the weighting best for the long run (γ > 0)
    differs from the one best for the next return (γ = 0). 0 in the default world."""
    time_reference: tuple[float, ...] = (0.469, 0.467, 0.397, 0.396)
    """Typical time spent per shown video / 81 s of each group under the uniform policy (calibrated
    per preset; unused while ``habit_from_time`` is 0)."""
    watch_value: tuple[float, ...] = (1.0, 0.3, -0.4, -0.1)
    """Satisfaction per 81 s watched, per group (high, middle, low, new): the first column of the
    response-value table (``World.sat_coef``). Heavy users value time spent most in the default world."""
    long_taste: tuple[float, ...] = (0.9, 2.0, -0.9, -0.6)
    """Long-view logit per unit of a video's duration z-score, per group (high, middle, low, new), for a
    fresh user, on top of the average effect the predictors know: heavy users finish long videos, and
    so do middle-activity users while fresh; low-activity and new users drop them
    (``World.group_duration``). The ``classic`` preset's middle users are indifferent (0)."""
    long_taste_fatigue: tuple[float, ...] = (0.4, 2.0, 0.4, 0.4)
    """How much each unit of fatigue lowers that taste, per group: nobody finishes long videos when
    tired, and middle-activity users' strong taste turns to dislike within a session (the ``classic``
    preset: 0.4 for every group)."""
    return_volatility: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    """Scale of the return noise (``return_noise``) per group (high, middle, low, new)."""
    user_volatility: float = 0.0
    """Spread of a log-normal per-user factor on the return noise (0: every user alike). With the
    per-group scales, the uncertainty of the return is heteroscedastic and user-dependent."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def preset(cls, name: str = "default", world_seed: int = 0) -> WorldConfig:
        """A named variant of the built-in world (:data:`WORLD_PRESETS`), each calibrated on its own."""
        if name not in WORLD_PRESETS:
            raise ValueError(f"unknown world preset {name!r}; choose from {', '.join(WORLD_PRESETS)}")
        return cls(world_seed=world_seed, **WORLD_PRESETS[name])

    @classmethod
    def from_dict(cls, d: dict) -> WorldConfig:
        """Rebuild a saved config. One saved before ``long_taste`` existed is a ``classic`` world: a
        field it lacks gets that world's value, not today's default."""
        d = dict(d)
        d["group_mix"] = tuple(d["group_mix"])
        if "long_taste" not in d:
            d = {**WORLD_PRESETS["classic"], **d}
        for key in ("behaviour_bias", "return_day_bias", "sat_reference", "return_volatility", "time_reference",
                    "watch_value", "long_taste", "long_taste_fatigue"):
            if key in d:  # configs saved before a field existed get its default
                d[key] = tuple(d[key])
        return cls(**d)

    def validate(self) -> None:
        if self.n_candidates < self.slate_size:
            raise ValueError(f"n_candidates ({self.n_candidates}) must be ≥ slate_size ({self.slate_size})")
        if self.n_videos < self.n_candidates:
            raise ValueError(f"n_videos ({self.n_videos}) must be ≥ n_candidates ({self.n_candidates})")
        if len(self.group_mix) != len(GROUPS) or min(self.group_mix) < 0 or sum(self.group_mix) <= 0:
            raise ValueError(f"group_mix needs {len(GROUPS)} non-negative shares, got {self.group_mix}")
        if len(self.watch_value) != len(GROUPS):
            raise ValueError(f"watch_value needs {len(GROUPS)} values, got {self.watch_value}")
        if len(self.long_taste) != len(GROUPS) or len(self.long_taste_fatigue) != len(GROUPS):
            raise ValueError(f"long_taste and long_taste_fatigue need {len(GROUPS)} values each, got "
                             f"{self.long_taste} and {self.long_taste_fatigue}")
        if min(self.long_taste_fatigue) < 0:
            raise ValueError(f"long_taste_fatigue must be non-negative, got {self.long_taste_fatigue}")
        if len(self.return_volatility) != len(GROUPS) or min(self.return_volatility) < 0:
            raise ValueError(f"return_volatility needs {len(GROUPS)} non-negative scales, got {self.return_volatility}")
        if self.user_volatility < 0 or self.fatigue_regret < 0 or self.fatigue_skip < 0:
            raise ValueError("user_volatility, fatigue_regret and fatigue_skip must be non-negative")
        if self.return_horizon_days < self.max_return_day:
            raise ValueError("return_horizon_days must be ≥ max_return_day")
        if self.score_scale not in SCORE_SCALES:
            raise ValueError(f"score_scale must be one of {', '.join(SCORE_SCALES)}, got {self.score_scale!r}")


#: What a predicted score is divided by before weighting (``WorldConfig.score_scale``).
SCORE_SCALES = ("mean", "spread")


# ----------------------------------------------------------------------------------------------
# Response model coefficients. Rows follow BEHAVIOURS; these are structural (not calibrated).
# ----------------------------------------------------------------------------------------------
#                       click  long  like  follow comment fwd  profile hate
_COEF_QUALITY = (0.1, 0.9, 1.6, 0.2, 0.6, 0.8, 0.1, -0.5)
_COEF_BAIT = (1.4, -1.6, -1.0, -0.5, 0.0, -0.5, 0.3, 2.4)
_COEF_SHARE = (0.0, 0.0, 0.3, 0.0, 0.9, 1.3, 0.0, 0.0)
_COEF_DURATION = (-0.2, -0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
_COEF_AFFINITY = (1.2, 0.9, 0.3, 1.6, 0.3, 0.1, 1.4, -0.8)
# State terms the point-wise models do not see (so predictions are biased where it matters).
_COEF_FATIGUE = (-0.35, -0.45, -0.2, -0.2, -0.2, -0.2, -0.2, 0.5)
_COEF_REPEAT = (-0.3, -0.5, -0.2, -0.2, -0.2, -0.2, -0.2, 2.0)

# Per-group value of each response for the user's satisfaction (signed). Rows: high, middle, low,
# new. The first column, watch time (seconds / 81 s, KuaiRand's median duration), is
# WorldConfig.watch_value (a preset may change it); the columns here follow it: BEHAVIOURS, then
# click-bait clicks and the duration (z-score) of clicked videos. Heavy users are satisfied by
# watch time (long videos watched through); casual users by short, liked videos; new users by
# follows. So the best fusion weighting differs across activity groups.
#                     click long like follow comment fwd profile hate  bait  duration
_SAT_COEF_RESPONSES = (
    (0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.3, -4.0, -0.3, 0.0),  # high: heavy consumers (watch time 1.0)
    (0.0, 0.5, 2.0, 3.0, 2.0, 2.0, 0.5, -5.0, -0.8, 0.0),  # middle
    (0.0, 1.0, 4.0, 3.0, 2.0, 3.0, 0.5, -8.0, -1.6, -0.8),  # low: short liked videos, no click-bait
    (0.0, 0.6, 2.0, 8.0, 2.0, 2.0, 1.5, -6.0, -0.8, -0.4),  # new: won over by follows
)
# How each group's *true* responses weigh topic affinity, video quality and click-bait, relative to
# the population-average response the point-wise predictors learned (rows: high, middle, low, new).
# Heavy users follow their topics; casual and new users are won by quality and punish click-bait.
# So which predicted score is the better proxy of a good video depends on the user's group.
_GROUP_AFFINITY_MULT = (1.3, 1.0, 0.4, 0.6)
_GROUP_QUALITY_MULT = (0.6, 1.0, 1.6, 1.2)
_GROUP_BAIT_MULT = (0.8, 1.0, 1.6, 1.3)
# Satiation: a topic's effective affinity drops by this much per unit of its recent share of the
# shown videos (the predictors do not see it, so late in a session affinity-driven scores mislead).
SATIATION = 4.0
# Sensitivity of fatigue, per group (heavy users tire fastest of repetition).
_REPEAT_FATIGUE = (1.6, 1.0, 0.6, 0.8)
# Baseline return propensity (hazard logit offset) and habit level per group.
_GROUP_RETURN = (0.55, 0.0, -0.7, -0.4)
_GROUP_HABIT = (0.3, 0.0, -0.4, -0.6)
_GROUP_REOPEN = (0.4, 0.0, -0.6, -0.3)


#: The long-video tastes of the world that was the default until ``binge``'s became it: middle-activity
#: users indifferent to a video's length, every group's taste lowered a little by fatigue. Every
#: preset but ``default`` and ``binge`` keeps them, so each is the world it was measured in.
CLASSIC_LONG_TASTE: dict[str, tuple[float, ...]] = {
    "long_taste": (0.9, 0.0, -0.9, -0.6),
    "long_taste_fatigue": (0.4, 0.4, 0.4, 0.4),
}

#: Named variants of the built-in world, as WorldConfig overrides (``--world-preset``). Each carries
#: its own calibration constants (``benchmarks/calibrate.py --world-preset NAME``), so that the
#: uniform policy still reproduces KuaiRand's statistics.
#:
#: * ``default``: the world every headline table uses. Middle-activity users finish long videos
#:   while fresh and drop them as they tire (``long_taste``, ``long_taste_fatigue``), so their best
#:   weighting turns from watch time to their group's long views and likes as fatigue builds, while
#:   the other groups keep theirs: the best weighting depends on the group *and* on fatigue
#:   (``tests/test_room_to_learn.py``), and the immediate feedback shows the change.
#: * ``binge``: the same world as ``default`` (its name while it was a variant; runs and docs
#:   measured then name it).
#: * ``classic``: the default world before ``binge``'s tastes became it (``CLASSIC_LONG_TASTE``):
#:   the best weighting depends on the activity group, not on fatigue. The ``classic`` pages of the
#:   docs were measured in it; every preset below builds on it.
#: * ``habit``: time spent builds the long-term habit (``habit_from_time``), a cross-session trade-off
#:   (for middle-activity users, ranking by watch time costs the next return but builds habit that
#:   pays later; docs/simulator.md), and the return's noise is scaled
#:   per group and per user (``return_volatility``, ``user_volatility``): heteroscedastic uncertainty.
#: * ``longterm``: ``habit`` with three times the habit from time spent, and heavy users who enjoy
#:   watching less (``watch_value``): a cross-session trade-off for middle-activity users (ranking by
#:   watch time costs the next return and pays 0.5 days a week later) and a long-run gain for heavy
#:   users 2.6 times their next-return gain. Built to test whether a discount pays where the world
#:   gives it something to find (docs/critic.md section 8).
#: * ``tired``: ``habit``, plus tired users regret long watching (``fatigue_regret``), so late in a
#:   session short, liked videos win and the best weighting changes with fatigue
#:   (``tests/test_room_to_learn.py``). It is not the default because it turns RLUR's watch-time
#:   heuristic against retention: see ``docs/benchmark/tired/`` and the README.
#: * ``weary``: ``classic``, plus tired users skip long videos (``fatigue_skip``), so a heavy
#:   user's best weighting turns from watch time to long views as fatigue builds, inside a session
#:   and across same-day reopens (``tests/test_room_to_learn.py``). Unlike the regret of ``tired``,
#:   skipping shows in the immediate feedback (fewer clicks, long views and watch seconds), so
#:   RLUR's heuristic reward agrees with it: see ``docs/benchmark/weary/`` and the README.
#: * ``spread``: ``classic`` with every predicted score divided by its spread across a
#:   request's candidates instead of its typical value (``score_scale``), so that a unit of weight
#:   gives every score the same say; divided by its typical value, a like score has about three times
#:   watch time's. A check that the benchmark's ordering does not hinge on the scaling
#:   (docs/benchmark/spread/).
#: * ``weary-spread``: ``weary`` with the same scaling, where trading watch time against long views
#:   no longer needs the other six weights at the bottom of the box (docs/critic.md, section 11).
WORLD_PRESETS: dict[str, dict] = {
    "default": {},
    "binge": {},
    "classic": {
        **CLASSIC_LONG_TASTE,
        "behaviour_bias": (0.207, -0.772, -6.424, -7.796, -7.549, -9.5, -5.487, -9.061),
        "return_day_bias": (0.109, -0.393, -0.171),
        "reopen_bias": -0.904,
        "leave_bias": -3.103,
        "sat_reference": (0.467, 0.338, 0.649, 0.246),
        "time_reference": (0.5, 0.5, 0.5, 0.5),
    },
    "habit": {
        **CLASSIC_LONG_TASTE,
        "habit_from_time": 1.0,
        "return_volatility": (0.6, 1.0, 1.6, 1.4),
        "user_volatility": 0.5,
        "behaviour_bias": (0.203, -0.767, -6.409, -7.825, -7.559, -9.488, -5.484, -9.044),
        "return_day_bias": (0.093, -0.439, -0.194),
        "reopen_bias": -0.922,
        "leave_bias": -3.104,
        "sat_reference": (0.463, 0.336, 0.645, 0.247),
        "time_reference": (0.464, 0.425, 0.394, 0.394),
    },
    "longterm": {
        **CLASSIC_LONG_TASTE,
        "habit_from_time": 3.0,
        "watch_value": (0.2, 0.3, -0.4, -0.1),
        "return_volatility": (0.6, 1.0, 1.6, 1.4),
        "user_volatility": 0.5,
        "behaviour_bias": (0.204, -0.773, -6.409, -7.794, -7.552, -9.461, -5.493, -9.018),
        "return_day_bias": (-0.085, -0.637, -0.336),
        "reopen_bias": -0.933,
        "leave_bias": -3.33,
        "sat_reference": (0.093, 0.325, 0.633, 0.243),
        "time_reference": (0.469, 0.413, 0.383, 0.381),
    },
    "tired": {
        **CLASSIC_LONG_TASTE,
        "habit_from_time": 1.0,
        "return_volatility": (0.6, 1.0, 1.6, 1.4),
        "user_volatility": 0.5,
        "fatigue_regret": 0.85,
        "behaviour_bias": (0.218, -0.778, -6.456, -7.757, -7.564, -9.489, -5.459, -8.977),
        "return_day_bias": (0.264, -0.217, 0.105),
        "reopen_bias": -0.912,
        "leave_bias": -3.511,
        "sat_reference": (0.131, 0.065, 0.401, 0.027),
        "time_reference": (0.475, 0.43, 0.395, 0.392),
    },
    "weary": {
        **CLASSIC_LONG_TASTE,
        "fatigue_skip": 6.0,
        "behaviour_bias": (1.349, -0.175, -6.176, -7.719, -7.477, -9.435, -5.364, -9.013),
        "return_day_bias": (0.107, -0.433, -0.222),
        "reopen_bias": -0.912,
        "leave_bias": -3.141,
        "sat_reference": (0.334, 0.331, 0.827, 0.353),
        "time_reference": (0.331, 0.338, 0.323, 0.337),
    },
    "spread": {
        **CLASSIC_LONG_TASTE,
        "score_scale": "spread",
        "behaviour_bias": (0.157, -0.733, -6.315, -7.826, -7.472, -9.382, -5.521, -9.263),
        "return_day_bias": (0.139, -0.353, -0.156),
        "reopen_bias": -0.896,
        "leave_bias": -3.293,
        "sat_reference": (0.494, 0.328, 0.542, 0.209),
        "time_reference": (0.495, 0.436, 0.38, 0.387),
    },
    "weary-spread": {
        **CLASSIC_LONG_TASTE,
        "fatigue_skip": 6.0,
        "score_scale": "spread",
        "behaviour_bias": (1.442, -0.097, -6.069, -7.733, -7.389, -9.329, -5.398, -9.2),
        "return_day_bias": (0.121, -0.396, -0.219),
        "reopen_bias": -0.9,
        "leave_bias": -3.317,
        "sat_reference": (0.356, 0.323, 0.723, 0.314),
        "time_reference": (0.354, 0.346, 0.315, 0.332),
    },
}


class World:
    """Static world: the video catalogue, prediction errors and the user population sampler.

    Tensors (N videos, T topics, R = len(BEHAVIOURS), k = len(SCORE_NAMES)):
        ``video_topic (N,)`` long, ``video_quality (N,)``, ``video_bait (N,)`` 0/1,
        ``video_share (N,)``, ``video_duration (N,)`` seconds,
        ``video_base_logit (N, R)`` true per-video logit part (before user and state terms),
        ``video_pred_logit (N, R)`` the predictors' per-video logit part (true part + fixed error).
    """

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = config or WorldConfig()
        self.config.validate()
        c = self.config
        g = torch.Generator().manual_seed((int(c.world_seed) * 7919 + 17) % (2**63))
        n = c.n_videos
        # Topic popularity is skewed (a few big topics), like KuaiRand's tag distribution.
        pop = torch.rand(c.n_topics, generator=g) ** 2 + 0.05
        self.video_topic = torch.multinomial(pop / pop.sum(), n, replacement=True, generator=g)
        self.video_quality = torch.randn(n, generator=g)
        self.video_bait = (torch.rand(n, generator=g) < c.clickbait_share).float()
        self.video_share = torch.randn(n, generator=g)
        # Durations: log-normal with median 81 s (KuaiRand's median), clipped to [5 s, 600 s].
        self.video_duration = torch.exp(math.log(81.0) + 0.8 * torch.randn(n, generator=g)).clamp(5, 600)
        dur_z = (self.video_duration.log() - math.log(81.0)) / 0.8
        self.video_duration_z = dur_z

        coef = lambda t: torch.tensor(t, dtype=torch.float32)  # noqa: E731
        self.coef_affinity = coef(_COEF_AFFINITY)
        self.coef_fatigue = coef(_COEF_FATIGUE)
        self.coef_repeat = coef(_COEF_REPEAT)
        #: Satisfaction value of each response per group: watch time, then _SAT_COEF_RESPONSES.
        self.sat_coef = torch.cat((coef(c.watch_value)[:, None], coef(_SAT_COEF_RESPONSES)), dim=1)
        self.repeat_fatigue = coef(_REPEAT_FATIGUE)
        self.group_return = coef(_GROUP_RETURN)
        self.group_habit = coef(_GROUP_HABIT)
        self.group_reopen = coef(_GROUP_REOPEN)
        self.sat_reference = coef(c.sat_reference)
        self.time_reference = coef(c.time_reference)
        self.group_affinity_mult = coef(_GROUP_AFFINITY_MULT)
        self.group_quality_mult = coef(_GROUP_QUALITY_MULT)
        self.group_bait_mult = coef(_GROUP_BAIT_MULT)
        #: Long-view logit per unit of duration z-score when fresh, and its loss per unit of fatigue.
        self.group_duration = coef(c.long_taste)
        self.group_duration_fatigue = coef(c.long_taste_fatigue)
        self.coef_quality = coef(_COEF_QUALITY)
        self.coef_bait = coef(_COEF_BAIT)

        self.video_base_logit = (
            coef(c.behaviour_bias)
            + self.video_quality[:, None] * coef(_COEF_QUALITY)
            + self.video_bait[:, None] * coef(_COEF_BAIT)
            + self.video_share[:, None] * coef(_COEF_SHARE)
            + dur_z[:, None] * coef(_COEF_DURATION)
        ).contiguous()
        error = c.prediction_noise * torch.randn(n, len(BEHAVIOURS), generator=g)
        self.video_pred_logit = (self.video_base_logit + error).contiguous()
        # The 7 probability-valued predicted scores (SCORE_NAMES[1:]) as columns of BEHAVIOURS.
        self.scored_behaviours = torch.tensor([BEHAVIOURS.index(n) for n in SCORE_NAMES[1:]])
        self.video_pred_logit_scored = self.video_pred_logit[:, self.scored_behaviours].contiguous()
        self.coef_affinity_scored = self.coef_affinity[self.scored_behaviours].contiguous()
        # Derived layouts for the simulator's hot path (copies of the tables above, nothing drawn).
        # Score-major ("structure of arrays"): row l holds one quantity for every video, so one op
        # covers a whole (quantity, users × videos) block with unit stride instead of broadcasting
        # along a short last dimension.
        self.pred_scored_t = self.video_pred_logit_scored.t().contiguous()  # (k-1, N)
        #: Per-video rows used by the immediate-feedback module: the R base logits, then quality,
        #: click-bait, duration z-score and duration (seconds).
        self.video_response_t = torch.cat((
            self.video_base_logit.t(), self.video_quality[None], self.video_bait[None],
            self.video_duration_z[None], self.video_duration[None],
        )).contiguous()  # (R + 4, N)
        # Hazard offsets for return days 1..H: day 1, day 2, then a flat tail (KuaiRand's shape:
        # a sharp day-1 mass, then successive-day ratios rising to ≈ 0.65; not geometric).
        h = c.return_horizon_days
        day_bias = torch.full((h,), c.return_day_bias[2])
        day_bias[0], day_bias[1] = c.return_day_bias[0], c.return_day_bias[1]
        self.return_day_bias = day_bias
        # Reference scale of each predicted score in the fusion score Σ_l w_l x_l / ref_l: its typical
        # value (default), or its typical spread across a request's candidates (score_scale).
        self.score_ref = self._score_reference(g)

    # ------------------------------------------------------------------------------------------
    @property
    def n_groups(self) -> int:
        return len(GROUPS)

    def predicted_scores(self, video: torch.Tensor, affinity: torch.Tensor) -> torch.Tensor:
        """Point-wise predicted scores ``x (…, k)`` in SCORE_NAMES order, as probabilities/seconds.

        The predictors see the user's topic affinity but not fatigue, repetition or the user's own
        propensities, and they carry a fixed per-video error: imperfect estimates, as in production.
        """
        p = torch.sigmoid(self.video_pred_logit_scored[video] + affinity.unsqueeze(-1) * self.coef_affinity_scored)
        watch = self.video_duration[video] * (0.08 + 0.85 * p[..., 1])
        return torch.cat((watch.unsqueeze(-1), p), dim=-1)

    def fused_scores(
        self, video: torch.Tensor | None, affinity: torch.Tensor, weights: torch.Tensor, *,
        logits: torch.Tensor | None = None, duration: torch.Tensor | None = None,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``Σ_l w_l x_{j,l}`` for ``video (b, C)``, ``affinity (b, C)``, ``weights (b, k)`` → ``(b, C)``.

        Same result as ``fusion_scores(weights, predicted_scores(video, affinity))`` without
        materialising the ``(b, C, k)`` scores: the hot path of the simulator. The k-1 probability
        scores are computed score-major, ``(k-1, b, C)``, so every op runs with unit stride. The sum
        takes the probability scores in SCORE_NAMES order, then the watch-time score, each with a
        fused multiply-add: the same floats as ``bmm`` over the probabilities plus ``addcmul``.

        The simulator passes the inputs already gathered (from its candidate windows) to reuse
        memory: ``logits (k-1, b, C)``, the rows of ``pred_scored_t`` for the videos (overwritten),
        and ``duration (b, C)``; ``video`` is then not used. ``out`` receives the scores.
        """
        b, c = affinity.shape
        k1 = self.pred_scored_t.shape[0]
        if logits is None or duration is None:
            flat = video.reshape(-1)
            logits = torch.index_select(self.pred_scored_t, 1, flat).view(k1, b, c)
            duration = self.video_duration.index_select(0, flat).view(b, c)
        p = logits
        # p_l = sigmoid(pred_logit_l + affinity · coef_l)   (addcmul is a fused multiply-add)
        p.addcmul_(affinity, self.coef_affinity_scored.view(k1, 1, 1)).sigmoid_()
        p = p.unbind(0)
        w = weights.t().unsqueeze(-1).unbind(0)  # k columns (b, 1)
        score = torch.mul(p[0], w[1], out=out)
        for j in range(1, k1):
            score.addcmul_(p[j], w[j + 1])
        # watch-time score = duration · (0.08 + 0.85 · p_long_view), weighted by w_watch
        watch = p[1].mul_(0.85).add_(0.08).mul_(duration)  # p_long_view is not needed any more
        return score.addcmul_(watch, w[0])

    def _score_reference(self, g: torch.Generator) -> torch.Tensor:
        users = self.sample_users(512, seed=-1)
        video = torch.randint(0, self.config.n_videos, (512, 64), generator=g)
        aff = users["interest"].gather(1, self.video_topic[video])
        scores = self.predicted_scores(video, aff)  # (512 requests, 64 candidates, k)
        if self.config.score_scale == "spread":
            return scores.std(dim=1).mean(dim=0)
        return scores.mean(dim=(0, 1))

    def sample_users(self, n: int, seed: int) -> dict[str, torch.Tensor]:
        """Draw ``n`` users' static traits and initial long-term state from ``seed``.

        Returns ``group (n,)`` long, ``interest (n, T)``, ``propensity (n, R)``, ``patience (n,)``,
        ``habit (n,)``, ``volatility (n,)`` (scale of the return noise). The same (world, seed, n)
        always gives the same users.
        """
        if n <= 0:
            raise ValueError(f"number of users must be positive, got {n}")
        c = self.config
        g = torch.Generator().manual_seed((int(seed) * 104729 + int(c.world_seed) * 31 + 5) % (2**63))
        mix = torch.tensor(c.group_mix, dtype=torch.float64)
        group = torch.multinomial(mix / mix.sum(), n, replacement=True, generator=g)
        # Interests: a weak background plus 2–3 core topics the user loves.
        interest = 0.5 * torch.randn(n, c.n_topics, generator=g) - 0.6
        n_core = 3
        core = torch.rand(n, c.n_topics, generator=g).argsort(dim=1)[:, :n_core]
        interest.scatter_add_(1, core, 1.2 + 0.5 * torch.rand(n, n_core, generator=g))
        propensity = 0.3 * torch.randn(n, len(BEHAVIOURS), generator=g)
        patience = 0.4 * torch.randn(n, generator=g)
        habit = self.group_habit[group] + 0.3 * torch.randn(n, generator=g)
        volatility = torch.tensor(c.return_volatility)[group]
        if c.user_volatility:  # drawn last, so the draws above do not depend on it
            volatility = volatility * torch.exp(c.user_volatility * torch.randn(n, generator=g))
        return {
            "group": group, "interest": interest, "propensity": propensity,
            "patience": patience, "habit": habit, "volatility": volatility,
        }
