"""Gymnasium registration of the retention environments, without importing them (so ``import rlur`` stays cheap).

* ``rlur/Retention-v1`` (:data:`ENV_ID`): episodes of a fixed number of sessions; the episode return
  ranks policies as the per-user mean return time does (``docs/integrations.md``).
* ``rlur/Retention-v0``: episodes of a fixed calendar horizon (the first version's episodes).

Both give the paper's reward (``-return_time`` at each session end) and have a single and a vector
entry point (``rlur.sim.gym_env``).
"""

from __future__ import annotations

import gymnasium

__all__ = ["ENV_ID", "ENV_ID_DAYS", "register_envs"]

#: The default environment: an episode is ``n_sessions`` sessions of one user.
ENV_ID = "rlur/Retention-v1"
#: Episodes of ``horizon_days`` calendar days (their return is nearly constant across policies).
ENV_ID_DAYS = "rlur/Retention-v0"

_MODULE = "rlur.sim.gym_env"


def register_envs() -> None:
    """Register both ids (single and vector entry points) with Gymnasium; idempotent."""
    for env_id, episode in ((ENV_ID, "sessions"), (ENV_ID_DAYS, "days")):
        if env_id not in gymnasium.registry:
            gymnasium.register(
                id=env_id,
                entry_point=f"{_MODULE}:RetentionGymEnv",
                vector_entry_point=f"{_MODULE}:RetentionVectorEnv",
                kwargs={"episode": episode},
            )
