"""Throughput and label latency of the production loop (``rlur live``).

Two measurements:

1. **Catch-up throughput** on an event log written beforehand (the simulator's users, both arms, no joiner or
   trainer running): how fast the rehearsal simulates and logs requests, how many transitions per second the
   joiner joins (set-based SQL, 50,000-event rounds, one transaction each), how many the trainer reads into its
   replay buffer (request payloads fetched from the event log), and how many RLUR updates it runs per second.
2. **Streaming latency** in a real closed loop (``LiveRun``: the joiner and trainer as their own processes): for
   every transition, the wall time from the moment its label was logged (the user's next request, next session
   start, or the censoring tick) to the moment the joiner wrote it, the trainer buffered it, and a published
   version had trained on it; and the label delay in simulated hours.

    python benchmarks/live_throughput.py                    # about 3 minutes on 2 cores
    python benchmarks/live_throughput.py --quick            # about 1 minute

Writes ``OUT/benchmark.json`` and prints a Markdown table. Run with ``OMP_NUM_THREADS=1``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from rlur.live.events import SqliteEventLog
from rlur.live.joiner import LabelJoiner
from rlur.live.rehearsal import LiveConfig, LiveRun
from rlur.live.report import latency_stats
from rlur.live.testing import simulated_log
from rlur.live.trainer import ContinuousTrainer, TrainerConfig


def catch_up(work: Path, users: int, days: int) -> dict:
    sim = simulated_log(work, LiveConfig(users=users, days=days))
    log = SqliteEventLog(work / "events.sqlite", readonly=True)
    joiner = LabelJoiner(log, work / "joiner.sqlite", horizon_days=10)
    t = time.perf_counter()
    n = joiner.run(poll_seconds=0)
    join_s = time.perf_counter() - t
    joiner.close()
    ingest = ContinuousTrainer(work, log, work / "joiner.sqlite", TrainerConfig(learning_starts=10**12), 10)
    t = time.perf_counter()
    while ingest.step():
        pass
    ingest_s = time.perf_counter() - t
    n_ingest = ingest.n_trainable
    ingest.close()
    shutil.rmtree(work / "trainer", ignore_errors=True)
    trainer = ContinuousTrainer(work, log, work / "joiner.sqlite", TrainerConfig(learning_starts=0), 10)
    rows = trainer.step()  # fills one chunk (and trains on it)
    updates = 100
    t = time.perf_counter()
    trainer.credit += updates
    trainer._train({})
    update_s = time.perf_counter() - t
    trainer.close()
    log.close()
    return {
        "users": users, "days": days, "requests": sim["requests"],
        "simulate_and_log_requests_per_s": sim["requests"] / sim["sim_seconds"],
        "joined_transitions": n, "joiner_transitions_per_s": n / join_s,
        "trainer_ingest_transitions_per_s": n_ingest / ingest_s, "trainer_updates_per_s": updates / update_s,
        "batch_rows_read": rows,
    }


def streaming(work: Path, users: int, days: int) -> dict:
    summary = LiveRun(LiveConfig(users=users, days=days), work, progress=False).run()
    lab = summary["labels"]
    return {
        "users": users, "days": days, "requests": summary["timing"]["requests"],
        "wall_seconds": summary["timing"]["wall_seconds"], "versions": summary["versions"]["published"],
        "latency_wall_seconds": latency_stats(work), "label_delay_sim_hours": lab["delay_sim_hours"],
        "conserved": lab["conserved"],
    }


def _row(name: str, p: dict) -> str:
    return f"| {name} | {p['n']:,} | {p['p50']:.3g} | {p['p90']:.3g} | {p['p99']:.3g} | {p['mean']:.3g} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=4096, help="users of the catch-up log")
    ap.add_argument("--days", type=int, default=6, help="days of the catch-up log")
    ap.add_argument("--live-users", type=int, default=2048, help="users of the streaming run")
    ap.add_argument("--live-days", type=int, default=8, help="days of the streaming run")
    ap.add_argument("--quick", action="store_true", help="1024 users × 4 days for both")
    ap.add_argument("--out", default=None, help="directory for benchmark.json (default: a temporary one)")
    args = ap.parse_args()
    if args.quick:
        args.users = args.live_users = 1024
        args.days = args.live_days = 4
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        result = {"catch_up": catch_up(Path(tmp) / "catch-up", args.users, args.days),
                  "streaming": streaming(Path(tmp) / "streaming", args.live_users, args.live_days)}
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "benchmark.json").write_text(json.dumps(result, indent=2) + "\n")
    c, s = result["catch_up"], result["streaming"]
    print(f"Catch-up on a log of {c['requests']:,} requests ({c['users']} users × {c['days']} days):\n")
    print("| stage | per second |\n|---|---|")
    print(f"| simulate + serve + log (requests) | {c['simulate_and_log_requests_per_s']:,.0f} |")
    print(f"| joiner (transitions joined) | {c['joiner_transitions_per_s']:,.0f} |")
    print(f"| trainer ingest (transitions into the replay buffer) | {c['trainer_ingest_transitions_per_s']:,.0f} |")
    print(f"| trainer RLUR updates (batch 512) | {c['trainer_updates_per_s']:,.1f} |")
    print(f"\nStreaming ({s['live_users'] if 'live_users' in s else s['users']} users × {s['days']} days, "
          f"{s['requests']:,} requests, {s['versions']} versions, {s['wall_seconds']:.0f} s wall, "
          f"conserved: {s['conserved']}):\n")
    print("| latency | n | p50 | p90 | p99 | mean |\n|---|---|---|---|---|---|")
    lat = s["latency_wall_seconds"]
    for key, name in (("label_to_transition", "label logged → transition written (wall s)"),
                      ("label_to_trainer", "label logged → in the trainer's replay buffer (wall s)"),
                      ("label_to_published_version", "label logged → in a published version (wall s)")):
        if key in lat and lat[key].get("n"):
            print(_row(name, lat[key]))
    print(_row("return label delay (simulated hours)", s["label_delay_sim_hours"]["return_labels"]))


if __name__ == "__main__":
    main()
