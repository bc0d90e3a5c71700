"""KuaiRand data and the learned simulator.

* :mod:`rlur.data.kuairand` — schema, chunked loading and validation of KuaiRand-Pure;
* :mod:`rlur.data.download` — ``rlur data download kuairand-pure``;
* :mod:`rlur.data.sessions` — sessions, requests, return gaps, replay of the simulator's state;
* :mod:`rlur.data.features`, :mod:`rlur.data.models`, :mod:`rlur.data.fit` — encoders, the feedback,
  leave and return models, ``rlur data fit``;
* :mod:`rlur.data.learned_world` — :func:`load_world`, :class:`LearnedRetentionEnv`, :func:`make_env`;
* :mod:`rlur.data.report` — held-out metrics, calibration, simulated vs logged statistics;
* :mod:`rlur.data.fixtures` — small synthetic KuaiRand-format folders with known hidden rules.
"""

from rlur.data.learned_world import LearnedRetentionEnv, LearnedWorld, LearnedWorldConfig, load_world, make_env

__all__ = ["LearnedRetentionEnv", "LearnedWorld", "LearnedWorldConfig", "load_world", "make_env"]
