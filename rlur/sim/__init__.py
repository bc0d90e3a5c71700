"""The built-in user-retention simulator: world, batched environment, Gymnasium wrappers."""

from rlur.sim.registration import register_envs as _register_envs

_register_envs()  # "rlur/Retention-v1" and "rlur/Retention-v0", imported when first made
