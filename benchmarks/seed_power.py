"""How many training seeds a paired comparison of two benchmark rows needs to find a given difference.

A benchmark pairs its rows seed by seed, and "A beats B" is a paired t-test over those seeds. How
often that test finds a true difference depends on the difference and on how much the paired
differences spread from seed to seed. This script measures the spread in existing benchmarks and
reports, for each difference asked about:

* the chance that a test over ``--seeds`` seeds finds it (two-sided, p < 0.05, right sign);
* the seeds needed for ``--power`` (default 80 %).

Both are also given at the ends of the spread's 95 % interval, since a spread measured on a few
seeds is itself uncertain. For example, for the paper's naive rows (γ = 0.9 returns 0.040 days
earlier than γ = 0):

    python benchmarks/seed_power.py docs/benchmark/updates-16x/world-seed-0 \\
        docs/benchmark/updates-16x/world-seed-0-seeds-5-9 --rows rlur-naive-g0.9,rlur-naive-g0 \\
        --effect 0.04 --seeds 5 --markdown power.md

The spread is taken over each benchmark's pairs and, with several benchmarks, pooled within them
(each centred on its own mean difference, so that a difference between worlds does not add to it).
Pool benchmarks of one budget: the spread grows with the budget.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pooled_comparison import load_results, seed_pairs

from rlur.evaluation.stats import paired_power, pooled_sd_ci, seeds_for_power


def power_of(groups: list[list[float]], effects: list[float], seeds: int, power: float) -> dict[str, Any]:
    """The spread of the differences within ``groups`` and, per effect, the power at ``seeds`` and the
    seeds for ``power``.

    Each figure comes as ``[at the spread's lower bound, at the spread, at its upper bound]``.
    """
    spread = pooled_sd_ci(groups)
    sds = [spread["ci_low"], spread["sd"], spread["ci_high"]]
    values = [d for g in groups for d in g]
    out: dict[str, Any] = {"n": spread["n"], "mean_diff": sum(values) / len(values), "sd": spread, "effects": {}}
    for effect in effects:
        out["effects"][f"{effect:g}"] = {
            "power": [paired_power(effect, sd, seeds) for sd in sds],
            "seeds_needed": [_seeds_needed(effect, sd, power) for sd in sds],
        }
    return out


def _seeds_needed(effect: float, sd: float, power: float) -> int | None:
    """``seeds_for_power``, or None past its search limit (a spread's upper bound can be that wide)."""
    try:
        return seeds_for_power(effect, sd, power)
    except ValueError:
        return None


def seed_power(benchmarks: dict[str, dict], row_a: str, row_b: str, metric: str,
               effects: list[float], seeds: int, power: float) -> dict[str, Any]:
    """``power_of`` the paired differences ``row_a − row_b`` per benchmark and pooled within them."""
    out: dict[str, Any] = {"rows": [row_a, row_b], "metric": metric, "seeds": seeds, "power": power,
                           "per_benchmark": {}}
    groups: list[list[float]] = []
    for name, results in benchmarks.items():
        diffs = [a - b for _, a, b in seed_pairs(results, row_a, row_b, metric)]
        if len(diffs) < 2:
            raise ValueError(f"{name}: the two rows share {len(diffs)} seed(s); a spread needs at least 2")
        out["per_benchmark"][name] = power_of([diffs], effects, seeds, power)
        groups.append(diffs)
    out["pooled"] = power_of(groups, effects, seeds, power)
    return out


def _lines(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Each benchmark's line, and the pooled one when there are several."""
    lines = list(report["per_benchmark"].items())
    return [*lines, ("pooled", report["pooled"])] if len(lines) > 1 else lines


def _range(values: list, fmt: str) -> str:
    low, mid, high = (">100000" if v is None else format(v, fmt) for v in values)
    return f"{mid} ({high}–{low})"


def markdown_table(report: dict[str, Any]) -> str:
    """One row per benchmark (and the pooled pairs), two columns per effect."""
    effects = list(report["pooled"]["effects"])
    a, b = report["rows"]
    lines = [
        f"Paired differences {a} − {b} on `{report['metric']}`: their spread over seeds (95 % chi-square "
        f"interval), the chance that a two-sided paired t-test over {report['seeds']} seeds finds a "
        f"difference of each size (p < 0.05, right sign), and the seeds it needs for "
        f"{100 * report['power']:g} % power. In brackets: the same at the spread's upper and lower bound. "
        "The pooled spread is taken within benchmarks, each centred on its own mean difference.",
        "",
        "| pairs | n | mean difference | spread (sd) | "
        + " | ".join(f"power at {report['seeds']} seeds, effect ±{e} | "
                     f"seeds for {100 * report['power']:g} %, effect ±{e}" for e in effects) + " |",
        "|---|---|---|---|" + "---|---|" * len(effects),
    ]
    for name, r in _lines(report):
        sd = r["sd"]
        cells = [f"`{name}`" if name != "pooled" else "**pooled**", str(r["n"]), f"{r['mean_diff']:+.3f}",
                 f"{sd['sd']:.3f} [{sd['ci_low']:.3f}, {sd['ci_high']:.3f}]"]
        for e in effects:
            cells += [_range(r["effects"][e]["power"], ".2f"), _range(r["effects"][e]["seeds_needed"], "d")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _print(report: dict[str, Any]) -> None:
    a, b = report["rows"]
    print(f"{a} − {b}, {report['metric']}: spread over seeds; power of a {report['seeds']}-seed paired t-test; "
          f"seeds for {100 * report['power']:g} % power (in brackets: at the spread's 95 % bounds)")
    for name, r in _lines(report):
        sd = r["sd"]
        print(f"{name:<48s} n = {r['n']:<3d} mean {r['mean_diff']:+.4f}  sd {sd['sd']:.4f} "
              f"[{sd['ci_low']:.4f}, {sd['ci_high']:.4f}]")
        for e, v in r["effects"].items():
            print(f"    effect ±{e}: power {_range(v['power'], '.2f')}, seeds needed {_range(v['seeds_needed'], 'd')}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("benchmarks", nargs="+", type=Path, help="`rlur benchmark --out` directories of one setting")
    ap.add_argument("--rows", required=True, help="A,B: the differences are A − B, seed by seed")
    ap.add_argument("--metric", default="avg_return_day", help="a per-seed metric of results.json")
    ap.add_argument("--effect", type=float, action="append", required=True,
                    help="a difference to find, in the metric's units (repeat for more)")
    ap.add_argument("--seeds", type=int, default=5, help="seeds of the test whose power is reported (default 5)")
    ap.add_argument("--power", type=float, default=0.8, help="power to size the seeds for (default 0.8)")
    ap.add_argument("--out", type=Path, help="write the report as JSON")
    ap.add_argument("--markdown", type=Path, help="write the report as a markdown table")
    args = ap.parse_args(argv)
    try:
        rows = args.rows.split(",")
        if len(rows) != 2 or not all(rows):
            raise ValueError(f"--rows needs two rows A,B, got {args.rows!r}")
        if any(e == 0 for e in args.effect):
            raise ValueError("--effect 0 cannot be found by any number of seeds")
        if args.seeds < 2:
            raise ValueError(f"--seeds must be at least 2 for a paired t-test, got {args.seeds}")
        if not 0 < args.power < 1:
            raise ValueError(f"--power must lie in (0, 1), got {args.power}")
        benchmarks = {str(p): load_results(p) for p in args.benchmarks}
        report = seed_power(benchmarks, rows[0], rows[1], args.metric, args.effect, args.seeds, args.power)
    except ValueError as exc:
        print(f"seed_power: error: {exc}", file=sys.stderr)
        return 2
    _print(report)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    if args.markdown:
        args.markdown.write_text(markdown_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
