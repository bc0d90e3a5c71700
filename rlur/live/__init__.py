"""The production loop (``rlur live``): event log, label joiner, continuous trainer, rehearsal.

See ``docs/live.md``. Modules: :mod:`~rlur.live.events` (the event log), :mod:`~rlur.live.joiner`
(delayed labels → transitions, exactly once), :mod:`~rlur.live.trainer` (transitions → versioned
policies), :mod:`~rlur.live.server` (in-process or HTTP serving), :mod:`~rlur.live.rehearsal` (the
closed loop with a simulated calendar), :mod:`~rlur.live.roles` (the joiner and trainer processes),
:mod:`~rlur.live.report` (the summary), :mod:`~rlur.live.commands` (``rlur live``) and
:mod:`~rlur.live.testing` (event logs for tests and benchmarks).
"""
