"""``rlur benchmark``: the paper's offline table over several seeds, with ablations and error bars.

Every row is trained with the same budget (batched steps × simulated users) for each seed, in
parallel worker processes, then evaluated with one protocol on the same held-out users. The table
reports mean ± 95 % t-interval over seeds and a paired t-test of RLUR against every other row, and
of RLUR-naive γ = 0.9 against γ = 0 (the paper's second claim: the discount across sessions pays).

Two metrics are co-primary: ``avg_return_day`` (the paper's, a mean over return gaps) and
``avg_return_day_per_user`` (every user weighs the same). RLUR's p-values against a row are
Holm-adjusted across the two. ``static-best`` (:mod:`rlur.evaluation.static_search`) is a reference
line with a larger search budget, shown apart. Every result records how far the world's hidden
satisfaction lines up with the agent's heuristic reward (:mod:`rlur.evaluation.alignment`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as _st
from tqdm.auto import tqdm

from rlur.evaluation.alignment import reward_alignment
from rlur.evaluation.static_search import StaticSearchConfig, search_static_best
from rlur.evaluation.stats import holm_adjust, mean_ci, paired_test, slope
from rlur.sim.world import WORLD_PRESETS, WorldConfig
from rlur.training.checkpoint import atomic_write_json

__all__ = [
    "ALL_ROWS", "CO_PRIMARY", "EXTRA_ROWS", "REFERENCE_ROWS", "ROWS", "BenchmarkConfig", "best_rows", "code_version",
    "convergence", "extend_result", "load_extendable", "machine_info", "paired_naive_discount", "paired_vs_rlur",
    "recorded_world", "run_benchmark", "world_record",
]

#: Row name → (algorithm, overrides of that algorithm's config: ``RLURConfig`` for rlur and rlur-naive,
#: ``CEMConfig`` for cem). The first five are the paper's rows.
ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "cem": ("cem", {}),
    # One search per activity group, as RLUR has one actor per group: the fair static baseline. CEM's
    # settings otherwise; none of five variants screened on world seed 1 was better beyond the noise
    # (docs/benchmark/cem-screen).
    "cem-per-group": ("cem", {"per_group": True}),
    "td3": ("td3", {}),
    "rlur-naive-g0": ("rlur-naive", {"gamma": 0.0}),
    "rlur-naive-g0.9": ("rlur-naive", {"gamma": 0.9}),
    "rlur": ("rlur", {}),
    "rlur-no-normalise": ("rlur", {"normalise": False}),
    "rlur-no-rnd": ("rlur", {"rnd": False}),
    "rlur-no-immediate": ("rlur", {"immediate": False, "rnd": False}),
    "rlur-no-groups": ("rlur", {"groups": False}),
    "rlur-no-soft-reg": ("rlur", {"soft_reg": False}),
    # β_T = 0: the actor follows the immediate critic alone, so the retention critic's share shows.
    "rlur-immediate-only": ("rlur", {"beta_retention": 0.0}),
    "static-best": ("static-best", {}),
}
#: Reference lines, not budget-equal rows: shown apart in the tables, with their search budget.
REFERENCE_ROWS = ("static-best",)
#: Rows beyond the paper's table, run only when named (``--algos``): RLUR with the candidate options
#: (``RLURConfig.candidate_explore`` and ``candidate_pull``; docs/critic.md, section 10).
EXTRA_ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "rlur-candidates": ("rlur", {"candidate_explore": 0.2, "candidate_pull": 1.0}),
    "rlur-group-critics": ("rlur", {"group_critics": True}),
    # The first release's heuristic reward (long views and hate in it), for the switch to the paper's.
    "rlur-hand-weighted": ("rlur", {"heuristic": "hand-weighted"}),
}
ALL_ROWS = {**ROWS, **EXTRA_ROWS}
PAPER = {  # Cai et al. 2023, Table 1 (offline simulator on KuaiRand): returning time, day-1 retention
    "cem": (2.036, 0.587), "td3": (2.009, 0.592), "rlur-naive-g0": (2.001, 0.596),
    "rlur-naive-g0.9": (1.961, 0.601), "rlur": (1.892, 0.618),
}
#: ``avg_return_day_per_user`` is the same return day with every user weighing the same: the headline
#: metric weighs users by their return gaps, so it hardly sees users a policy drives away
#: (docs/critic.md, section 5).
METRICS = ("avg_return_day", "avg_return_day_per_user", "day1_retention", "watch_time_per_request", "session_depth")
#: The two co-primary metrics: RLUR's p-values against a row are Holm-adjusted across them.
CO_PRIMARY = ("avg_return_day", "avg_return_day_per_user")
LOWER_IS_BETTER = {"avg_return_day": True, "avg_return_day_per_user": True, "day1_retention": False,
                   "watch_time_per_request": False, "session_depth": False}


@dataclass
class BenchmarkConfig:
    seeds: int = 5
    first_seed: int = 0
    """Training seeds are ``first_seed … first_seed + seeds − 1``: a second benchmark with
    ``first_seed = 5`` adds five new seeds, and ``benchmarks/pooled_comparison.py`` pools both."""
    world_seed: int = 0
    rows: tuple[str, ...] = tuple(ROWS)
    steps: int = 1200
    """Batched steps per run (the same for every row)."""
    n_users: int = 512
    """Simulated users per training step (the same for every row)."""
    updates_per_step: int = 1
    """Gradient updates per batched step of the off-policy rows (TD3, RLUR-naive, RLUR and its
    ablations; CEM makes none). Compute, not data: every row still sees the same simulated requests."""
    eval_every: int = 150
    curve_eval_users: int = 512
    curve_eval_days: int = 5
    eval_users: int = 4096
    """Held-out users of the final evaluation (the same users for every run)."""
    eval_days: int = 14
    eval_seed: int = 7_000_001
    world_path: str | None = None
    """A learned world instead of the built-in one."""
    world_preset: str = "default"
    """Variant of the built-in world (``WorldConfig.preset``)."""
    workers: int = 0
    """Worker processes (0: the number of CPU cores)."""
    static_search: dict[str, int] = dataclasses.field(default_factory=dict)
    """``StaticSearchConfig`` overrides of the ``static-best`` reference line's search."""

    @classmethod
    def quick(cls, **kw: Any) -> BenchmarkConfig:
        """A cut-down run for trying it out (and for CI): 2 seeds, tiny budgets."""
        base = dict(seeds=2, steps=60, n_users=96, eval_every=20, curve_eval_users=96, curve_eval_days=2,
                    eval_users=256, eval_days=4, static_search=dataclasses.asdict(StaticSearchConfig.quick()))
        base.update(kw)
        return cls(**base)


def _config_section(algo: str) -> str:
    """The ``TrainConfig`` field a row's overrides apply to."""
    return {"cem": "cem", "td3": "td3"}.get(algo, "rlur")


def _static_best_one(seed: int, cfg: BenchmarkConfig, world: Any) -> dict[str, Any]:
    """Worker: the ``static-best`` search with this seed's training users, evaluated like a row."""
    from rlur.training.loop import evaluate_policy

    found = search_static_best(world, seed, StaticSearchConfig(**cfg.static_search))
    final = evaluate_policy(found["policy"], world, cfg.eval_users, cfg.eval_days, cfg.eval_seed)
    return {"row": "static-best", "seed": seed, "metrics": {m: final[m]["mean"] for m in METRICS}, "curve": [],
            "search": {k: found[k] for k in ("actions", "scores", "requests", "config")}}


def _train_one(row: str, seed: int, cfg: BenchmarkConfig, out: str, keep_resume: bool = False) -> dict[str, Any]:
    """Worker: train one (row, seed) and evaluate it on the benchmark's held-out users.

    The result is saved next to the run (``result.json``), so a rerun of a crashed benchmark skips
    the runs that finished. Their ``resume.pt`` (the full training state, with the replay buffer)
    is deleted unless ``keep_resume``; ``rlur abtest --online`` and the critic diagnostics need it."""
    import torch

    from rlur.training.loop import TrainConfig, Trainer, evaluate_policy

    torch.set_num_threads(1)
    algo, overrides = ALL_ROWS[row]
    done = Path(out) / "runs" / row / f"seed{seed}" / "result.json"
    evaluation = {"users": cfg.eval_users, "days": cfg.eval_days, "seed": cfg.eval_seed}
    if algo == "static-best":
        from rlur.training.loop import build_world

        settings = {"static_search": dataclasses.asdict(StaticSearchConfig(**cfg.static_search)),
                    "world": world_record(cfg), "world_path": cfg.world_path, "eval": evaluation}
        if (earlier := _finished(done, settings)) is not None:
            return earlier
        world = build_world(cfg.world_path, WorldConfig.preset(cfg.world_preset, world_seed=cfg.world_seed))
        result = {**_static_best_one(seed, cfg, world), "settings": settings}
        done.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(result, done)
        return result
    tc = TrainConfig(algo=algo, steps=cfg.steps, seed=seed, world_seed=cfg.world_seed, n_users=cfg.n_users,
                     updates_per_step=cfg.updates_per_step,
                     eval_every=cfg.eval_every, eval_users=cfg.curve_eval_users, eval_days=cfg.curve_eval_days,
                     checkpoint_every=max(cfg.steps // 4, 1), world_path=cfg.world_path,
                     world=WorldConfig.preset(cfg.world_preset, world_seed=cfg.world_seed))
    section = _config_section(algo)  # RLUR-naive's switches: training.loop.rlur_config
    setattr(tc, section, dataclasses.replace(getattr(tc, section), **overrides))
    settings = {"train": tc.to_dict(), "eval": evaluation}
    if (earlier := _finished(done, settings)) is not None:
        return earlier
    run_dir = done.parent
    trainer = Trainer(tc, run_dir, progress=False)
    if not trainer.resume() or trainer.step < tc.steps or not (run_dir / "eval.json").exists():
        trainer.train()
    final = evaluate_policy(trainer.learner.policy(), trainer.world, cfg.eval_users, cfg.eval_days, cfg.eval_seed)
    result = {"row": row, "seed": seed, "metrics": {m: final[m]["mean"] for m in METRICS}, "curve": trainer.curve,
              "settings": settings}
    atomic_write_json(result, done)
    if not keep_resume:  # the replay buffer (~80 MB a run); the result and checkpoint.pt stay
        (run_dir / "resume.pt").unlink(missing_ok=True)
    return result


def _finished(path: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The result a run saved when it finished, if it did (None: train it); an error if it was
    trained or evaluated with other settings."""
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    if json.loads(json.dumps(settings)) != result.get("settings"):
        raise ValueError(f"{path} was written by a different configuration; use a new --out")
    return result


def convergence(steps: list[int], means: list[float], ci_half: list[float], n_seeds: int) -> dict[str, Any]:
    """Is the learning curve flat at its end? The least-squares slope of the mean curve over its last
    fifth (at least 3 points), in days per 1,000 steps, with a 95 % interval; ``flat`` when that
    interval includes 0.

    Each point's standard error is its 95 % t half-width over ``n_seeds`` seeds divided by the t
    quantile. The points are treated as independent; they share seeds, and a seed's curve is
    positively correlated with itself over time, so the interval is, if anything, too wide: a row
    this check fails is still falling (or rising). The second half of the convergence criterion,
    that doubling the budget moves the final mean by less than 0.02 days or its own CI, is measured
    per world with a run at twice the budget (docs/findings.md).
    """
    n = len(means)
    if n < 3 or n_seeds < 2:
        return {"slope_per_1000": math.nan, "ci_low": math.nan, "ci_high": math.nan, "points": n, "flat": False}
    tail = max(3, math.ceil(n / 5))
    x = np.asarray(steps[-tail:], dtype=np.float64) / 1000.0
    se = np.asarray(ci_half[-tail:], dtype=np.float64) / float(_st.t.ppf(0.975, n_seeds - 1))
    dx = x - x.mean()
    b = slope(x, means[-tail:])
    half = 1.959964 * float(np.sqrt((dx**2 * se**2).sum()) / (dx**2).sum())
    return {"slope_per_1000": b, "ci_low": b - half, "ci_high": b + half, "points": tail,
            "flat": bool(b - half <= 0.0 <= b + half)}


def summarise(per_seed: dict[str, list[dict]], cfg: BenchmarkConfig) -> dict[str, Any]:
    """Mean ± CI per row and metric, paired tests of RLUR against every row, convergence flags."""
    summary: dict[str, Any] = {}
    for row, runs in per_seed.items():
        runs = sorted(runs, key=lambda r: r["seed"])
        summary[row] = {m: mean_ci([r["metrics"][m] for r in runs]) for m in METRICS}
        if row in REFERENCE_ROWS:  # a search, not a learning curve
            summary[row]["search"] = [r["search"] for r in runs]
            continue
        steps = [p["step"] for p in runs[0]["curve"]]
        curve = [mean_ci([r["curve"][i]["avg_return_day"] for r in runs]) for i in range(len(steps))]
        half = [0.0 if math.isnan(c["ci_high"]) else (c["ci_high"] - c["ci_low"]) / 2 for c in curve]
        means = [c["mean"] for c in curve]
        summary[row]["curve"] = {"step": steps, "avg_return_day": means, "ci_half": half}
        summary[row]["convergence"] = convergence(steps, means, half, len(runs))
        summary[row]["converged"] = summary[row]["convergence"]["flat"]
    metrics = {row: [{"seed": r["seed"], **r["metrics"]} for r in runs] for row, runs in per_seed.items()}
    return {"summary": summary, "paired_vs_rlur": paired_vs_rlur(metrics),
            "paired_naive_discount": paired_naive_discount(metrics)}


def _paired_rows(per_seed_metrics: dict[str, list[dict]], row_a: str, row_b: str) -> dict[str, Any]:
    """Paired t-test of ``row_a − row_b``, seed by seed (results.json's ``per_seed`` layout:
    ``{row: [{"seed": s, metric: value, ...}]}``), on every metric both rows hold."""
    a = sorted(per_seed_metrics[row_a], key=lambda r: r["seed"])
    b = sorted(per_seed_metrics[row_b], key=lambda r: r["seed"])
    if [r["seed"] for r in a] != [r["seed"] for r in b]:
        raise ValueError(f"row {row_b!r} has seeds {[r['seed'] for r in b]}, {row_a} {[r['seed'] for r in a]}")
    # A metric added after one of the rows was measured is tested where both rows have it.
    measured = [m for m in METRICS if all(m in r for r in a + b)]
    tests = {m: paired_test([r[m] for r in a], [r[m] for r in b]) for m in measured}
    primary = [m for m in CO_PRIMARY if m in tests]
    for m, p in zip(primary, holm_adjust([tests[m]["p_value"] for m in primary]), strict=True):
        tests[m]["p_holm"] = p  # Holm-adjusted across the co-primary metrics
    return tests


def paired_vs_rlur(per_seed_metrics: dict[str, list[dict]]) -> dict[str, Any]:
    """Paired t-test of RLUR against every other row (``rlur − row``) on every metric both rows
    hold; empty without an ``rlur`` row."""
    if "rlur" not in per_seed_metrics:
        return {}
    return {row: _paired_rows(per_seed_metrics, "rlur", row) for row in per_seed_metrics if row != "rlur"}


def paired_naive_discount(per_seed_metrics: dict[str, list[dict]]) -> dict[str, Any]:
    """Paired t-test of RLUR-naive γ = 0.9 against γ = 0 (``γ 0.9 − γ 0``; the paper's Table 1 has
    1.961 − 2.001 = −0.040 days), on every metric both rows hold; empty unless both rows ran."""
    if not {"rlur-naive-g0.9", "rlur-naive-g0"} <= per_seed_metrics.keys():
        return {}
    return _paired_rows(per_seed_metrics, "rlur-naive-g0.9", "rlur-naive-g0")


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on. The same seeds give the same numbers bit for bit on one
    machine, but PyTorch's float kernels differ between CPU instruction sets, so a network-trained
    row can come out differently on another CPU (README, "Reproducing it")."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cores": os.cpu_count(),
            "torch": torch.__version__, "python": platform.python_version(), "code": code_version()}


def code_version(root: Path | None = None) -> str:
    """rlur's version, and the git commit it ran from where the package sits in a git checkout
    (``+dirty`` when the checkout's code, ``rlur/`` or ``pyproject.toml``, has uncommitted changes;
    benchmark outputs written into the checkout do not count), so that rows added later with
    ``--extend`` say whether the code changed in between."""
    import subprocess

    from rlur import __version__

    root = root or Path(__file__).resolve().parents[2]  # the checkout holding rlur/, for a source install
    if not (root / ".git").exists():  # an installed package: its version says which code it is
        return __version__
    try:
        git = ["git", "-C", str(root)]
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        code = ("--", "rlur", "pyproject.toml")
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no", *code], capture_output=True,
                               text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__} ({commit}{'+dirty' if dirty else ''})"


#: Settings that may differ between a benchmark and the run that extends it (``--extend``). The preset
#: is a name: the world it names is compared instead (``world_record``).
_FREE_SETTINGS = ("rows", "workers", "world_preset")


def world_record(cfg: BenchmarkConfig) -> dict[str, Any] | None:
    """The built-in world a benchmark runs in, as saved in its ``results.json`` (None: a learned world)."""
    return None if cfg.world_path else WorldConfig.preset(cfg.world_preset, world_seed=cfg.world_seed).to_dict()


def recorded_world(config: dict[str, Any]) -> WorldConfig | None:
    """The built-in world an earlier ``results.json`` was measured in. Results written before the world
    was recorded there were all measured while ``classic`` was the default world, so their preset
    ``default`` means ``classic`` (every other preset is the world it was)."""
    if "world" in config:
        return None if config["world"] is None else WorldConfig.from_dict(config["world"])
    if config.get("world_path"):
        return None
    preset = config.get("world_preset", "default")
    return WorldConfig.preset("classic" if preset == "default" else preset, world_seed=config.get("world_seed", 0))


def load_extendable(out: Path, cfg: BenchmarkConfig) -> dict[str, Any]:
    """The earlier result in ``out/results.json`` that ``cfg`` may add rows to.

    Every setting but the rows and the worker count must match, and so must the world (whatever the
    preset is called), so that the kept rows and the new ones are trained with the same budget in the
    same world and evaluated on the same held-out users.
    """
    path = out / "results.json"
    if not path.exists():
        raise FileNotFoundError(f"--extend needs an earlier benchmark in {out}, but {path} does not exist")
    previous = json.loads(path.read_text())
    if not isinstance(previous, dict) or not {"config", "per_seed", "summary"} <= previous.keys():
        raise ValueError(f"{path} is not the results.json of an rlur benchmark")
    mine, defaults = dataclasses.asdict(cfg), dataclasses.asdict(BenchmarkConfig())
    theirs = {k: previous["config"].get(k, defaults[k]) for k in mine}
    differ = [f"{k} {theirs[k]!r} there, {mine[k]!r} here" for k in mine
              if k not in _FREE_SETTINGS and theirs[k] != mine[k]]
    if differ:
        raise ValueError(f"cannot extend the benchmark in {out}: its settings differ ({'; '.join(differ)})")
    mine_world = world_record(cfg)
    if recorded_world(previous["config"]) != (None if mine_world is None else WorldConfig.from_dict(mine_world)):
        name = previous["config"].get("world_preset", "default")
        hint = ("it was measured while `classic` was the default world: extend it with --world-preset classic"
                if "world" not in previous["config"] and name == "default" else f"its preset was {name!r}")
        raise ValueError(f"cannot extend the benchmark in {out}: it was measured in another world than "
                         f"--world-preset {cfg.world_preset!r} ({hint})")
    return previous


def extend_result(previous: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Merge ``new`` (a result over some rows) into ``previous`` (an earlier result of the same
    settings): rows in ``new`` replace or join ``previous``'s, the others are kept as they were, and
    the paired tests are made again over the merged rows."""
    rows = list(previous["config"]["rows"]) + [r for r in new["config"]["rows"] if r not in previous["config"]["rows"]]
    pick = {r: (new if r in new["config"]["rows"] else previous) for r in rows}
    per_seed = {r: pick[r]["per_seed"][r] for r in rows}
    merged = {**new, "config": {**new["config"], "rows": rows},
              "seconds": previous["seconds"] + new["seconds"],
              "machine": previous.get("machine"),
              "extended": [*previous.get("extended", []),
                           {"rows": list(new["config"]["rows"]), "seconds": new["seconds"],
                            "machine": new.get("machine")}],
              "per_seed": per_seed,
              "summary": {r: pick[r]["summary"][r] for r in rows},
              "paired_vs_rlur": paired_vs_rlur(per_seed),
              "paired_naive_discount": paired_naive_discount(per_seed)}
    return merged


def _fmt(ci: dict | None) -> str:
    if ci is None:  # a metric added to rlur after the row was measured
        return "—"
    if math.isnan(ci["ci_low"]):
        return f"{ci['mean']:.3f}"
    return f"{ci['mean']:.3f} ± {(ci['ci_high'] - ci['ci_low']) / 2:.3f}"


def _on(machine: dict[str, Any] | None) -> str:
    """`` on <cpu> (<capability>, N cores), torch <version>, rlur <code>`` (empty for results from before
    it was recorded; the code part only once it was)."""
    if not machine:
        return ""
    code = f", rlur {machine['code']}" if machine.get("code") else ""
    return (f" on {machine['cpu']} ({machine['cpu_capability']}, {machine['cores']} cores), "
            f"torch {machine['torch']}{code}")


def _preset_note(cfg: dict[str, Any]) -> str:
    preset = cfg.get("world_preset", "default")
    return "" if preset == "default" else f" (preset `{preset}`)"


def _updates_note(cfg: dict[str, Any]) -> str:
    n = cfg.get("updates_per_step", 1)
    return "" if n == 1 else f" ({n} gradient updates per step)"


def _seeds_note(cfg: dict[str, Any]) -> str:
    first, n = cfg.get("first_seed", 0), cfg["seeds"]
    count = f"{n} training seed{'s' if n != 1 else ''}"
    if first == 0:
        return count
    return f"{count} ({first})" if n == 1 else f"{count} ({first}–{first + n - 1})"


def _paired_cell(p: dict[str, float] | None) -> str:
    """``+0.123, p=0.0456`` (Holm-adjusted where the result has it; unadjusted in older results)."""
    if p is None:
        return "—"
    return f"{p['diff']:+.3f}, p={p.get('p_holm', p['p_value']):.3g}"


def _converged_cell(s: dict[str, Any]) -> str:
    c = s.get("convergence")
    if c is None:  # a result from before the slope check
        return "yes" if s["converged"] else "no"
    return f"{'yes' if c['flat'] else 'no'} ({c['slope_per_1000']:+.2f} [{c['ci_low']:+.2f}, {c['ci_high']:+.2f}])"


def _table_row(row: str, s: dict[str, Any], paired: dict[str, Any]) -> str:
    paper = PAPER.get(row)
    return (f"| {row} | {_fmt(s['avg_return_day'])} | {_fmt(s.get('avg_return_day_per_user'))} | "
            f"{_fmt(s['day1_retention'])} | {_fmt(s['watch_time_per_request'])} | {_fmt(s['session_depth'])} | "
            f"{_paired_cell(paired.get('avg_return_day'))} | {_paired_cell(paired.get('avg_return_day_per_user'))} | "
            f"{_converged_cell(s) if 'curve' in s else '—'} | "
            f"{'' if paper is None else f'{paper[0]} / {paper[1]}'} |")


def best_rows(summary: dict[str, Any]) -> dict[str, str]:
    """The budget-equal row with the lowest mean on each co-primary metric (reference lines excluded)."""
    rows = [r for r in summary if r not in REFERENCE_ROWS and summary[r].get(CO_PRIMARY[1]) is not None]
    return {m: min(rows, key=lambda r: summary[r][m]["mean"]) for m in CO_PRIMARY if rows}


def _alignment_lines(result: dict[str, Any]) -> list[str]:
    a = result.get("alignment")
    if not a:
        return []
    cells = "; ".join(f"{name}: " + ", ".join(f"{g} {r:.2f}" for g, r in a[name].items())
                      for name in a if isinstance(a[name], dict))
    return ["", "How far the agent's heuristic reward lines up with the world's hidden satisfaction (Pearson's r "
                f"per request under random actions, {a['users']} users × {a['steps']} requests, by activity group; "
                f"`rlur.evaluation.alignment`): {cells}."]


def results_markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    header = ("| row | avg return day ↓ | per user ↓ | day-1 retention ↑ | watch s / request | session depth | "
              "RLUR − row (return day), p | RLUR − row (per user), p | converged (slope, days / 1k steps) | "
              "paper (return day / day-1) |")
    lines = [
        "# rlur benchmark",
        "",
        f"World seed {cfg['world_seed']}{_preset_note(cfg)}, {_seeds_note(cfg)} per row, "
        f"{cfg['steps']} batched steps × "
        f"{cfg['n_users']} simulated users per run{_updates_note(cfg)}; final evaluation on {cfg['eval_users']} "
        f"held-out users over {cfg['eval_days']} days. Mean ± 95 % t-interval over seeds. The two co-primary "
        "metrics are the average return day (over return gaps, the paper's) and the same per user; RLUR − row is a "
        "paired t-test over seeds, its p-values Holm-adjusted across the two. Converged: the slope of the mean "
        "learning curve over its last fifth has a 95 % interval that includes 0.",
        "",
        header,
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    summary = result["summary"]
    for row, s in summary.items():
        if row not in REFERENCE_ROWS:
            lines.append(_table_row(row, s, result["paired_vs_rlur"].get(row, {})))
    best = best_rows(summary)
    if best:
        lines += ["", "Best row on each co-primary metric: "
                  + "; ".join(f"{m}: **{r}** ({summary[r][m]['mean']:.3f})" for m, r in best.items()) + "."]
    references = [r for r in summary if r in REFERENCE_ROWS]
    for row in references:
        search = summary[row]["search"][0]
        budget = sum(s["requests"] for s in summary[row]["search"]) / len(summary[row]["search"])
        lines += ["", f"Reference line, not budget-equal: `{row}`, the best fixed weighting per activity group found "
                      f"by a search on training users ({search['config']['candidates']} weightings screened, "
                      f"{budget / 1e6:.1f} M simulated requests per search, against "
                      f"{cfg['steps'] * cfg['n_users'] / 1e6:.2f} M per training run; one search per seed).", "",
                  header, "|---|---|---|---|---|---|---|---|---|---|",
                  _table_row(row, summary[row], result["paired_vs_rlur"].get(row, {}))]
    lines += _naive_discount_lines(result)
    lines += _alignment_lines(result)
    lines += ["", f"Wall time: {result['seconds']:.0f} s with {result['workers']} worker processes"
              f"{_on(result.get('machine'))}.", ""]
    for ext in result.get("extended", []):
        lines.insert(-1, f"Rows {', '.join(ext['rows'])} added or re-measured later (`--extend`, "
                         f"{ext['seconds']:.0f} s of that{_on(ext.get('machine'))}); the others are as first measured.")
    return "\n".join(lines)


def _naive_discount_lines(result: dict[str, Any]) -> list[str]:
    """The paired comparison of the naive rows under the table (none for a result without both)."""
    paired = result.get("paired_naive_discount") or {}
    parts = []
    for metric, label in (("avg_return_day", "return day"), ("avg_return_day_per_user", "per user"),
                          ("day1_retention", "day-1 retention")):
        p = paired.get(metric)
        if p is not None and not math.isnan(p["ci_low"]):
            parts.append(f"{label} {p['diff']:+.3f} [{p['ci_low']:+.3f}, {p['ci_high']:+.3f}], p={p['p_value']:.3g}")
    if not parts:
        return []
    return ["", "RLUR-naive γ = 0.9 − γ = 0, paired by seed (95 % t-interval; paper: return day −0.040, "
                "day-1 retention +0.005): " + "; ".join(parts) + "."]


def plot_learning_curves(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for row, s in result["summary"].items():
        if "curve" not in s:  # a reference line: no learning curve
            continue
        c = s["curve"]
        mean = c["avg_return_day"]
        lo = [m - h for m, h in zip(mean, c["ci_half"], strict=True)]
        hi = [m + h for m, h in zip(mean, c["ci_half"], strict=True)]
        style = "-" if row in PAPER else "--"
        (line,) = ax.plot(c["step"], mean, style, label=row)
        ax.fill_between(c["step"], lo, hi, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("training step (batched requests)")
    ax.set_ylabel("average return day (↓)")
    ax.set_title("Learning curves: mean over seeds with 95 % CI")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _world_alignment(cfg: BenchmarkConfig) -> dict[str, Any] | None:
    """The heuristic reward's alignment with the built-in world's hidden satisfaction (None: a learned
    world, which has no hidden satisfaction to compare with)."""
    if cfg.world_path:
        return None
    from rlur.sim.world import World

    return reward_alignment(World(WorldConfig.preset(cfg.world_preset, world_seed=cfg.world_seed)))


def _run_local(jobs: list[tuple[str, int]], cfg: BenchmarkConfig, out: str, workers: int,
               keep_resume: bool = False) -> Iterator[dict]:
    """The local backend: in this process (one worker) or a process pool; results as they finish."""
    if workers == 1:
        for row, seed in jobs:
            yield _train_one(row, seed, cfg, out, keep_resume)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_train_one, row, seed, cfg, out, keep_resume): (row, seed) for row, seed in jobs}
        for fut in as_completed(futures):
            yield fut.result()


def run_benchmark(cfg: BenchmarkConfig, out: str | Path, progress: bool = True, backend: str = "local",
                  crash_marker: str | None = None, extend: bool = False, keep_resume: bool = False) -> dict[str, Any]:
    """Train every (row, seed), evaluate, and write results.json, results.md, learning_curves.png.

    ``backend="ray"`` runs each (row, seed) as a Ray task on the connected cluster
    (:mod:`rlur.distributed.grid`; ``crash_marker`` is its fault-injection test hook); the per-seed
    numbers are the local backend's. Runs that fail are reported together at the end, after the
    others have finished (their run directories are kept, so a rerun only trains the failed ones).

    ``extend=True`` adds ``cfg.rows`` to the earlier result in ``out`` (same settings otherwise,
    :func:`load_extendable`), re-measuring those it holds and keeping the others as they were.

    A finished run keeps its result, logs and policy (``checkpoint.pt``); its ``resume.pt`` (the
    replay buffer, ~80 MB) is deleted unless ``keep_resume`` (the local backend's option).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    unknown = [r for r in cfg.rows if r not in ALL_ROWS]
    if unknown:
        raise ValueError(f"unknown benchmark rows {unknown}; choose from {', '.join(ALL_ROWS)}")
    if cfg.world_preset not in WORLD_PRESETS:
        raise ValueError(f"unknown world preset {cfg.world_preset!r}; choose from {', '.join(WORLD_PRESETS)}")
    if cfg.first_seed < 0:
        raise ValueError(f"first_seed must be non-negative, got {cfg.first_seed}")
    if cfg.updates_per_step < 1:
        raise ValueError(f"updates_per_step must be at least 1, got {cfg.updates_per_step}")
    StaticSearchConfig(**cfg.static_search)  # a bad search setting fails before any training
    previous = load_extendable(out, cfg) if extend else None
    jobs = [(row, seed) for row in cfg.rows for seed in range(cfg.first_seed, cfg.first_seed + cfg.seeds)]
    if backend == "ray":
        from rlur.distributed.backend import cluster_cpus
        from rlur.distributed.grid import run_grid

        workers = min(cluster_cpus(), len(jobs))
        results: Iterator[Any] = run_grid(jobs, cfg, str(out), crash_marker=crash_marker)
    elif backend == "local":
        workers = min(cfg.workers or os.cpu_count() or 1, len(jobs))
        results = _run_local(jobs, cfg, str(out), workers, keep_resume)
    else:
        raise ValueError(f"unknown backend {backend!r}")
    start = time.perf_counter()
    machine = machine_info()  # the code the runs start from, not whatever is checked out when they end
    per_seed: dict[str, list[dict]] = {row: [] for row in cfg.rows}
    failed: list[Any] = []
    with tqdm(total=len(jobs), desc="benchmark runs", unit="run", disable=not progress) as bar:
        for res in results:
            bar.update(1)
            if not isinstance(res, dict):  # a RunFailure of the Ray backend
                failed.append(res)
                continue
            per_seed[res["row"]].append(res)
            bar.set_postfix_str(f"{res['row']} s{res['seed']}: {res['metrics']['avg_return_day']:.3f}")
    if failed:
        from rlur.cli import CliError

        reasons = "; ".join(f"{f.row} seed {f.seed}: {f.error}" for f in failed)
        raise CliError(f"{len(failed)} of {len(jobs)} benchmark runs failed ({reasons}); the finished runs are "
                       f"kept under {out / 'runs'}, so the same command again trains only the failed ones")
    result = {"config": {**dataclasses.asdict(cfg), "world": world_record(cfg)}, "workers": workers, "backend": backend,
              "seconds": time.perf_counter() - start, "machine": machine, "alignment": _world_alignment(cfg),
              "per_seed": {row: sorted((r["seed"], r["metrics"]) for r in runs) for row, runs in per_seed.items()},
              **summarise(per_seed, cfg)}
    result["per_seed"] = {row: [{"seed": s, **m} for s, m in runs] for row, runs in result["per_seed"].items()}
    if previous is not None:
        result = extend_result(previous, result)
    atomic_write_json(result, out / "results.json")
    (out / "results.md").write_text(results_markdown(result))
    plot_learning_curves(result, out / "learning_curves.png")
    return result
