"""Logged data as Minari datasets, and back (``pip install 'rlur[minari]'``).

:func:`export_run` (``rlur data export``) writes the trainable transitions of an ``rlur live`` run,
or the replay buffer an ``rlur train`` run keeps in ``resume.pt`` (off-policy algorithms, users
stepped in this process), as a Minari dataset with **one episode per user**, the user's requests in
the order they were served (a training replay holds only the last ``buffer_capacity`` transitions).
An episode of ``T`` transitions holds

* ``observations`` ``(T + 1, OBS_DIM)``: the state of each request, then the state that followed the
  last one (the layout of ``rlur/Retention-v1``, ``docs/observation.md``);
* ``actions`` ``(T, k)``: the actions served (drawn from ``N(μ_b, σ_b)``, so they may lie outside
  the action box, which the ranking clips);
* ``rewards`` ``(T,)``: the paper's reward, ``-return_time`` in days at a session end, else 0 (a
  return not seen within the run's censoring horizon counts as the horizon);
* ``terminations`` all False, ``truncations`` True at the last step (the user lives on);
* ``infos``, ``T + 1`` entries as Minari's ``DataCollector`` records them (entry 0 is the reset's,
  entry ``t + 1`` describes action ``t``; entry 0 holds sentinels): ``behaviour_mu``,
  ``behaviour_std``, ``behaviour_logp`` (the serving version's μ_b, σ_b and log p_b(a|s), NaN at 0),
  ``feedback`` (watch seconds and behaviour counts of the slate), ``session_end``, ``return_time``
  (days, −1 where no session ended), ``has_next`` (False where ``s' = s``: a censored session end,
  whose next state is not the next observation), ``group``, ``user_id``, ``ts`` (simulated seconds
  since the run's start; −1 at 0 and in a training replay, which has no clock) and ``arm`` (−1 in a
  training replay).

:func:`read_minari_batch` turns such a dataset back into the replay :class:`~rlur.training.buffer.Batch`
that ``rlur train --from-minari`` trains on. Datasets are read from and written to Minari's local
folder (``MINARI_DATASETS_PATH``, default ``~/.minari/datasets``); nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import itertools
import warnings
from pathlib import Path

import numpy as np
import torch

try:
    import minari
    from minari.data_collector import EpisodeBuffer
    from minari.dataset.minari_dataset import parse_dataset_id
    from minari.storage.datasets_root_dir import get_dataset_path
except ImportError as err:  # pragma: no cover - the extra is installed by `make test`
    raise ImportError("Minari datasets need the minari extra: pip install 'rlur[minari]'") from err

from rlur.live.dataset import LoggedRows, read_logged
from rlur.sim.gym_env import ENV_ID, make_action_space, make_observation_space
from rlur.training.buffer import Batch

__all__ = ["INFO_KEYS", "episodes_from_rows", "export_run", "read_minari_batch", "replay_rows"]

#: The ``infos`` of an exported episode (see the module docstring).
INFO_KEYS = ("behaviour_mu", "behaviour_std", "behaviour_logp", "feedback", "session_end", "return_time",
             "has_next", "group", "user_id", "ts", "arm")


def _with_reset(values: np.ndarray, sentinel: float | int | bool) -> np.ndarray:
    """``values`` (one row per transition) after a sentinel row for the reset: ``T + 1`` rows."""
    first = np.full((1, *values.shape[1:]), sentinel, dtype=values.dtype)
    return np.concatenate([first, values])


def _episode(rows: LoggedRows, idx: np.ndarray, episode_id: int) -> EpisodeBuffer:
    """The episode of one user: the rows ``idx`` of ``rows``, in serving order."""
    b = {name: value[torch.from_numpy(idx)].numpy() for name, value in rows.batch.to_dict().items()}
    end = b["session_end"]
    infos = {
        "behaviour_mu": _with_reset(b["behaviour_mu"], np.nan),
        "behaviour_std": _with_reset(b["behaviour_std"], np.nan),
        "behaviour_logp": _with_reset(b["behaviour_logp"], np.nan),
        "feedback": _with_reset(b["feedback"], 0.0),
        "session_end": _with_reset(end, False),
        "return_time": _with_reset(np.where(end, b["return_time"], np.float32(-1.0)), -1.0),
        "has_next": _with_reset(rows.has_next[idx], True),
        "group": _with_reset(b["group"], b["group"][0]),
        "user_id": _with_reset(rows.user_id[idx], rows.user_id[idx[0]]),
        "ts": _with_reset(rows.ts[idx], -1),
        "arm": _with_reset(rows.arm[idx], rows.arm[idx[0]]),
    }
    n = len(idx)
    return EpisodeBuffer(
        id=episode_id,
        observations=np.concatenate([b["obs"], b["next_obs"][-1:]]),
        actions=b["action"],
        rewards=np.where(end, -b["return_time"], 0.0).astype(np.float64),
        terminations=np.zeros(n, dtype=np.bool_),
        truncations=np.arange(n) == n - 1,
        infos=infos,
    )


def episodes_from_rows(rows: LoggedRows) -> list[EpisodeBuffer]:
    """One episode per user (users in id order, each user's requests in serving order).

    Raises ``ValueError`` when a user's transitions do not chain (``s'`` of one is not the state of the
    next although it has one), i.e. when the log is not a complete record of the user's requests.
    """
    order = np.lexsort((rows.request_seq, rows.user_id))
    users = rows.user_id[order]
    same_user = users[1:] == users[:-1]
    chained = rows.has_next[order][:-1] & same_user
    obs, next_obs = rows.batch.obs[torch.from_numpy(order)], rows.batch.next_obs[torch.from_numpy(order)]
    link = torch.from_numpy(chained)
    if not torch.equal(next_obs[:-1][link], obs[1:][link]):
        raise ValueError("the logged transitions of a user do not chain (s' of a request is not the state of the "
                         "user's next one): the log is incomplete")
    starts = np.flatnonzero(np.concatenate([[True], ~same_user]))
    bounds = np.append(starts, len(order))
    return [_episode(rows, order[lo:hi], i) for i, (lo, hi) in enumerate(itertools.pairwise(bounds))]


def replay_rows(run_dir: str | Path) -> LoggedRows:
    """The replay buffer an ``rlur train`` run keeps in ``resume.pt``, in the order it was filled, with each
    row's user: every step adds one row per user, in user order."""
    state = torch.load(Path(run_dir) / "resume.pt", map_location="cpu", weights_only=False)
    cfg = state["config"]
    if "collector" in state:
        raise ValueError(f"{run_dir} did not step its own users ({state['collector']}): its replay has no per-user "
                         "order; export the live run it came from instead")
    if cfg.get("world_path"):
        raise ValueError(f"{run_dir} ran in a learned world; only runs in the built-in world can be exported")
    buffer = state["learner"].get("buffer") if isinstance(state["learner"], dict) else None
    if buffer is None:
        raise ValueError(f"{run_dir} ({cfg['algo']}) keeps no replay buffer; export an off-policy run "
                         "(rlur, rlur-naive, td3) or a live run")
    size, pos, users = int(buffer["size"]), int(buffer["pos"]), int(cfg["n_users"])
    filled = np.roll(np.arange(size), -pos) if size == int(cfg["buffer_capacity"]) else np.arange(size)
    batch = Batch(**{k: v[torch.from_numpy(filled)] for k, v in buffer["data"].items()})
    step = np.arange(size, dtype=np.int64)
    return LoggedRows(batch=batch, user_id=(step - size) % users, request_seq=step,
                      ts=np.full(size, -1, np.int64), arm=np.full(size, -1, np.int64),
                      has_next=np.ones(size, np.bool_), config={"world": cfg["world"], "algo": cfg["algo"]})


def export_run(run_dir: str | Path, name: str, arms: str = "all") -> minari.MinariDataset:
    """Write a live run's transitions (or a training run's replay) as the local Minari dataset ``name``.

    The dataset's environment is ``rlur/Retention-v1`` in the run's world, so
    ``dataset.recover_environment()`` gives the simulator the data came from.
    """
    run = Path(run_dir)
    _check_new(name)
    if not (run / "events.sqlite").is_file() and not (run / "resume.pt").is_file():
        raise FileNotFoundError(f"{run} is neither an `rlur live` run (events.sqlite) nor an `rlur train` run "
                                "(resume.pt)")
    if (run / "events.sqlite").is_file():
        rows, source = read_logged(run, arms), f"rlur live (arms={arms})"
    else:
        if arms != "all":
            raise ValueError("--arms is for live runs; a training run has no A/B arms")
        rows = replay_rows(run)
        source = f"rlur train --algo {rows.config['algo']} (its replay buffer)"
    episodes = episodes_from_rows(rows)
    import gymnasium

    world = {"world": rows.config["world"]} if "world" in rows.config else {"world_seed": rows.config["world_seed"]}
    spec = dataclasses.replace(gymnasium.spec(ENV_ID), kwargs={"episode": "sessions", **world})
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is set to None", category=UserWarning)  # author, permalink
        return minari.create_dataset_from_buffers(
            dataset_id=name, buffer=episodes, env=spec, observation_space=make_observation_space(),
            action_space=make_action_space(), algorithm_name=source,
            description=f"The transitions of {source}: one episode per user; infos hold the behaviour policy's "
                        "mu, std and log-probability (rlur.integrations.minari).",
        )


def _check_new(name: str) -> None:
    """A clear error before any work when ``name`` is not a valid, unused local dataset id."""
    try:
        parse_dataset_id(name)
    except (ValueError, TypeError):  # TypeError: no version
        raise ValueError(f"bad Minari dataset id {name!r}: expected (namespace/)name-vN, e.g. rlur/live-v0") from None
    if get_dataset_path(name).exists():
        raise ValueError(f"the local Minari dataset {name} exists already; delete it (minari delete {name}) or "
                         "choose another --out")


def read_minari_batch(name: str) -> Batch:
    """The local Minari dataset ``name`` (written by :func:`export_run`) as a replay batch."""
    if not (get_dataset_path(name) / "data").exists():
        raise FileNotFoundError(f"no local Minari dataset {name} (rlur data export writes one; nothing is "
                                "downloaded)")
    dataset = minari.load_dataset(name)  # local only (download=False)
    parts: list[dict[str, np.ndarray]] = []
    for episode in dataset.iterate_episodes():
        infos = episode.infos or {}
        missing = [k for k in INFO_KEYS if k not in infos]
        if missing:
            raise ValueError(f"{name}: episode {episode.id} has no {', '.join(missing)} in its infos; "
                             "rlur train --from-minari reads datasets written by rlur data export")
        parts.append(_transitions(episode.observations, episode.actions, infos))
    if not parts:
        raise ValueError(f"{name} holds no episode")
    return Batch(**{k: torch.from_numpy(np.concatenate([p[k] for p in parts])) for k in parts[0]})


def _transitions(observations: np.ndarray, actions: np.ndarray, infos: dict) -> dict[str, np.ndarray]:
    """The replay rows of one exported episode (infos' entry 0 is the reset's, dropped)."""
    step = {k: np.asarray(v)[1:] for k, v in infos.items()}
    obs = np.asarray(observations[:-1], dtype=np.float32)
    next_obs = np.asarray(observations[1:], dtype=np.float32).copy()
    next_obs[~step["has_next"]] = obs[~step["has_next"]]  # censored: s' = s, as the live trainer has it
    end = step["session_end"].astype(np.bool_)
    return {
        "obs": obs, "action": np.asarray(actions, dtype=np.float32),
        **{k: step[k].astype(np.float32) for k in ("behaviour_mu", "behaviour_std", "behaviour_logp", "feedback")},
        "session_end": end, "return_time": np.where(end, step["return_time"], 0.0).astype(np.float32),
        "next_obs": next_obs, "group": step["group"].astype(np.int64),
    }
