"""Learner speed: gradient updates/s, training steps/s and the wall time of ``rlur train``, per algorithm.

    python benchmarks/train_speed.py [--algos rlur rlur-naive td3 cem] [--baseline-ref 156fa0e]
        [--run-steps 300] [--updates 60] [--steps 20] [--repeats 3] [--out DIR]

Everything runs at the benchmark's shapes (``BenchmarkConfig``: 512 users, batch 512, hidden
(128, 128); its curve evaluations: every 150 steps on 512 users for 5 days; 4 checkpoints per run)
and on one thread (``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``), in fresh subprocesses:

* ``updates/s``: ``agent.update`` on batches sampled from a replay buffer filled by 40 training steps
  (RLUR, RLUR-naive, TD3; CEM makes no gradient updates);
* ``train steps/s``: whole training steps (serve, environment step, store, update) after the
  learning starts: the environment's steps per second inside training (× 512 users = requests/s);
* ``rlur train`` wall: the time of the whole command (``--run-steps`` steps with its evaluations and
  checkpoints, start-up included) and its CPU time;
* the limit a float32 matmul microbenchmark run in the same process implies: its GFLOP/s at the
  update's main shape (512 × 128 @ 128 × 128) over the update's matmul FLOPs (counted by
  ``torch.utils.flop_counter`` over two updates, as the actor steps every second one).

The rates and the matmul GFLOP/s are per second of the process's CPU time (one thread): on a shared
machine the wall clock also counts the time the process waits for a core, which other users' load
decides. The ``rlur train`` rows give both the wall and the CPU time.

With ``--baseline-ref REF`` the code of commit REF is checked out in a temporary ``git worktree``
and measured in the same run: each measurement alternates between the baseline and the current
code (``PYTHONPATH`` points the subprocess at one or the other), so machine noise hits both alike.
The tables give the median of ``--repeats`` and the range, and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALGOS = ("rlur", "rlur-naive", "td3", "cem")
LEARNS = ("rlur", "rlur-naive", "td3")
#: What each metric means and which way is better (for the ratio column: > 1 is a speed-up).
METRICS = {
    "updates_per_s": ("gradient updates per CPU s", True),
    "update_limit_per_s": ("matmul limit, updates per CPU s", True),
    "train_steps_per_s": ("train steps per CPU s", True),
    "run_wall_s": ("`rlur train` wall s", False),
    "run_cpu_s": ("`rlur train` CPU s", False),
}


# ---------------------------------------------------------------------------------------------
# The worker: runs in a subprocess, imports ``rlur`` from PYTHONPATH (current or baseline code).
# ---------------------------------------------------------------------------------------------
def _train_config(algo: str, **kw):
    from rlur.evaluation.benchmark import BenchmarkConfig
    from rlur.training.loop import TrainConfig

    b = BenchmarkConfig()
    return TrainConfig(algo=algo, n_users=b.n_users, eval_every=b.eval_every, eval_users=b.curve_eval_users,
                       eval_days=b.curve_eval_days, **kw)


def matmul_gflops(seconds: float = 1.0) -> float:
    """float32 GFLOP/s of ``(512, 128) @ (128, 128)``, the update's main matmul, per CPU second of
    this thread."""
    import torch

    a, b = torch.randn(512, 128), torch.randn(128, 128)
    for _ in range(20):
        torch.mm(a, b)
    n, start = 0, time.process_time()
    while time.process_time() - start < seconds:
        for _ in range(50):
            torch.mm(a, b)
        n += 50
    return 2 * 512 * 128 * 128 * n / (time.process_time() - start) / 1e9


def _advance(trainer, steps: int) -> None:
    """``steps`` training steps of ``trainer`` without evaluations or checkpoints."""
    learner, env = trainer.learner, trainer.env
    for _ in range(steps):
        served = learner.serve(trainer.obs, env.group)
        result = env.step(served["action"])
        learner.observe(trainer.obs, served, result)
        trainer.obs = result.obs


def worker(algo: str, updates: int, steps: int) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import rlur
    from rlur.training.loop import Trainer

    torch.set_num_threads(1)
    out: dict = {"rlur_package": str(Path(rlur.__file__).resolve().parent.parent), "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(_train_config(algo, steps=10**6), tmp, progress=False)
        _advance(trainer, 40)  # the buffer holds 39 × 512 transitions; updates have begun
        if algo in LEARNS:
            learner = trainer.learner
            agent, rng = learner.agent, learner.rng

            def update() -> None:
                agent.update(learner.buffer.sample(trainer.cfg.batch_size, rng), rng)

            with FlopCounterMode(display=False) as counter:
                update()
                update()
            out["update_gflop"] = counter.get_total_flops() / 2 / 1e9
            for _ in range(5):
                update()
            start = time.process_time()
            for _ in range(updates):
                update()
            out["updates_per_s"] = updates / (time.process_time() - start)
        start = time.process_time()
        _advance(trainer, steps)
        out["train_steps_per_s"] = steps / (time.process_time() - start)
    out["matmul_gflops"] = matmul_gflops()
    if "update_gflop" in out:
        out["update_limit_per_s"] = out["matmul_gflops"] / out["update_gflop"]
    return out


# ---------------------------------------------------------------------------------------------
# The driver: alternates baseline and current code, repeats, summarises.
# ---------------------------------------------------------------------------------------------
def _env(src: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def measure_worker(src: Path, algo: str, updates: int, steps: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", algo, "--updates", str(updates),
           "--steps", str(steps)]
    proc = subprocess.run(cmd, env=_env(src), cwd=src, capture_output=True, text=True, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if Path(result["rlur_package"]) != src.resolve():
        raise RuntimeError(f"the worker imported rlur from {result['rlur_package']}, not {src}")
    return result


def measure_run(src: Path, algo: str, run_steps: int) -> dict:
    """Wall and CPU seconds of ``rlur train`` at the benchmark's shapes, start-up included."""
    from rlur.evaluation.benchmark import BenchmarkConfig

    b = BenchmarkConfig()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-c", "import sys; from rlur.cli import main; sys.exit(main(sys.argv[1:]))",
               "train", "--algo", algo, "--steps", str(run_steps), "--users", str(b.n_users),
               "--eval-every", str(b.eval_every), "--eval-users", str(b.curve_eval_users),
               "--eval-days", str(b.curve_eval_days), "--checkpoint-every", str(max(run_steps // 4, 1)),
               "--no-progress", "--out", str(Path(tmp) / "run")]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=_env(src), cwd=src, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            raise RuntimeError(f"rlur train failed in {src}: {proc.stderr.read().decode()[-2000:]}")
        proc.stderr.close()
    return {"run_wall_s": wall, "run_cpu_s": usage.ru_utime + usage.ru_stime}


@contextlib.contextmanager
def baseline_tree(ref: str | None):
    """A temporary ``git worktree`` of ``ref`` (``None``: no baseline)."""
    if ref is None:
        yield None
        return
    sha = subprocess.run(["git", "rev-parse", "--verify", f"{ref}^{{commit}}"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="train-speed-") as tmp:
        tree = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(tree), sha], cwd=ROOT, check=True)
        try:
            yield sha, tree
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)


def _summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def run(args: argparse.Namespace) -> dict:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    current = {"label": "current", "commit": head.stdout.strip() + ("+uncommitted" if dirty else ""),
               "src": ROOT}
    report: dict = {"config": {k: v for k, v in vars(args).items() if k not in ("worker", "out")},
                    "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                "python": platform.python_version()},
                    "algos": {}}
    with baseline_tree(args.baseline_ref) as base:
        sources = [current]
        if base is not None:
            sources.insert(0, {"label": "baseline", "commit": base[0][:10], "src": base[1]})
        report["sources"] = {s["label"]: s["commit"] for s in sources}
        for algo in args.algos:
            samples: dict[str, dict[str, list[float]]] = {s["label"]: {} for s in sources}
            extra: dict[str, dict] = {}
            for r in range(args.repeats):
                order = sources if r % 2 == 0 else sources[::-1]  # alternate which goes first
                for s in order:
                    print(f"{algo}: repeat {r + 1}/{args.repeats}, {s['label']}", file=sys.stderr, flush=True)
                    got = measure_worker(s["src"], algo, args.updates, args.steps)
                    if args.run_steps:
                        got.update(measure_run(s["src"], algo, args.run_steps))
                    extra[s["label"]] = {k: got[k] for k in ("update_gflop", "torch") if k in got}
                    for k in (*METRICS, "matmul_gflops"):
                        if k in got:
                            samples[s["label"]].setdefault(k, []).append(got[k])
            entry = {label: {**{k: _summary(v) for k, v in m.items()}, **extra[label]} for label, m in samples.items()}
            if base is not None:
                entry["ratio"] = {}
                for k, (_, higher) in METRICS.items():
                    if k in samples["current"] and k in samples["baseline"]:
                        b, c = statistics.median(samples["baseline"][k]), statistics.median(samples["current"][k])
                        entry["ratio"][k] = c / b if higher else b / c
            report["algos"][algo] = entry
    return report


def markdown(report: dict) -> str:
    cfg, sources = report["config"], report["sources"]
    lines = ["# Learner speed (`benchmarks/train_speed.py`)", "",
             f"Sources: {', '.join(f'{k} = `{v}`' for k, v in sources.items())}. "
             f"One thread, the benchmark's shapes; {cfg['repeats']} repeats, alternating; "
             f"median (min–max). `rlur train` runs {cfg['run_steps']} steps. "
             f"Machine: {report['machine']['platform']}, {report['machine']['cpus']} CPUs.", ""]
    labels = list(sources)
    has_ratio = "baseline" in sources
    head = "| algo | metric | " + " | ".join(labels) + (" | speed-up |" if has_ratio else "")
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for algo, entry in report["algos"].items():
        for k, (name, _) in METRICS.items():
            if k not in entry[labels[-1]]:
                continue
            cells = []
            for label in labels:
                s = entry[label].get(k)
                cells.append("–" if s is None else f"{s['median']:.3g} ({s['min']:.3g}–{s['max']:.3g})")
            ratio = f" | {entry['ratio'][k]:.2f}×" if has_ratio and k in entry.get("ratio", {}) else (
                " | –" if has_ratio else "")
            lines.append(f"| {algo} | {name} | " + " | ".join(cells) + ratio + " |")
    lines += ["", "Update matmul GFLOP (counted) and matmul GFLOP per CPU s (512 × 128 @ 128 × 128, same process):", ""]
    for algo, entry in report["algos"].items():
        parts = []
        for label in labels:
            e = entry[label]
            flop = f"{e['update_gflop']:.3f} GFLOP/update, " if "update_gflop" in e else ""
            parts.append(f"{label}: {flop}{e['matmul_gflops']['median']:.0f} GFLOP/s")
        lines.append(f"- {algo}: " + "; ".join(parts))
    lines += ["", "Speed-up: baseline ÷ current for times, current ÷ baseline for rates (> 1: faster now). "
              "The matmul limit is the updates/s the update's matmul FLOPs alone would allow.", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
    p.add_argument("--baseline-ref", default=None, help="a commit to measure side by side (git worktree)")
    p.add_argument("--run-steps", type=int, default=300, help="steps of each `rlur train` run (0: skip)")
    p.add_argument("--updates", type=int, default=60, help="timed gradient updates per measurement")
    p.add_argument("--steps", type=int, default=20, help="timed training steps per measurement")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "train_speed")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.updates, args.steps)))
        return
    report = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train_speed.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (args.out / "train_speed.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
