"""rlur with the tools of the field; each module needs its optional extra.

* :mod:`rlur.integrations.sb3` — a Stable-Baselines3 ``VecEnv`` over the batched simulator
  (``pip install 'rlur[sb3]'``);
* :mod:`rlur.integrations.minari` — logged data as Minari datasets, and back (``pip install 'rlur[minari]'``).

See ``docs/integrations.md``.
"""
