"""Scale of a simulated A/B test: 100,000 users × 30 days, frozen ``uniform`` vs ``click`` by default.

    python benchmarks/abtest_scale.py [--users 100000] [--days 30] [--control uniform] [--treatment click]
                                      [--threads 1] [--out DIR]

Reports the wall time of the simulation and of the analysis, simulated user-requests per second,
peak resident memory and the machine's load average (figures depend on the load: other processes
sharing the cores slow it down). ``--out`` also writes the full report (report.json/md, daily.png).
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import torch

from rlur.abtest.analysis import analyze
from rlur.abtest.experiment import ExperimentConfig, run_experiment
from rlur.abtest.report import write_report

__all__ = ["main"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--control", default="uniform")
    ap.add_argument("--treatment", default="click")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--out", default=None, help="also write the report here")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    cfg = ExperimentConfig(control=args.control, treatment=args.treatment, users=args.users, days=args.days,
                           seed=args.seed)
    t0 = time.perf_counter()
    result = run_experiment(cfg, progress=not args.no_progress)
    sim = time.perf_counter() - t0
    t1 = time.perf_counter()
    stats = analyze(result.table, result.arm, cfg.alpha, cfg.shares)
    ana = time.perf_counter() - t1
    if args.out:
        write_report(result, args.out)
    tm = result.timing
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} CPU(s); "
          f"load average before {load0[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    print(f"{args.users:,} users × {args.days} days, {args.control} vs {args.treatment}")
    print(f"simulated {tm['requests']:,} user-requests in {tm['steps']:,} batched steps: {sim:.1f} s wall "
          f"({tm['requests_per_s']:,.0f} requests/s); analysis {ana:.1f} s; peak RSS {rss:,.0f} MiB")
    for name, lift in stats["lifts"].items():
        print(f"  {name:<16} lift {100 * lift['estimate']:+8.3f} %  [{100 * lift['ci_low']:+.3f}, "
              f"{100 * lift['ci_high']:+.3f}]  p = {lift['p_value']:.2g}  MDE ±{100 * stats['mde'][name]:.3f} %")


if __name__ == "__main__":
    main()
