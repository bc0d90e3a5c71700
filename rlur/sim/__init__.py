"""The built-in user-retention simulator: world, batched environment, Gymnasium wrappers."""

from rlur.sim import gym_env as _gym_env  # noqa: F401  (registers "rlur/Retention-v0")
