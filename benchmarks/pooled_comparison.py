"""Pool one paired comparison of two benchmark rows over several benchmarks (e.g. worlds 0, 1, 2).

Each benchmark pairs its rows seed by seed (seed i of one row against seed i of the other: same
world, same held-out users). A difference a world makes to both rows alike cancels within a pair,
so the pairs of several benchmarks can be pooled into one paired t-test with more power than any
one of them:

    python benchmarks/pooled_comparison.py docs/benchmark/classic/world-seed-0 docs/benchmark/classic/world-seed-1 \\
        docs/benchmark/classic/world-seed-2 --rows rlur-naive-g0.9,rlur-naive-g0 --rows rlur,cem \\
        --metrics avg_return_day,avg_return_day_per_user --markdown pooled.md

prints the difference ``A − B`` of every ``--rows A,B`` per benchmark and pooled (mean, 95 %
t-interval, p) for every metric of ``--metrics`` (default ``avg_return_day``), and writes them as
JSON (``--out``) and as a markdown table of the pooled tests (``--markdown``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rlur.evaluation.stats import mean_ci, paired_test


def seed_pairs(results: dict, row_a: str, row_b: str, metric: str) -> list[tuple[int, float, float]]:
    """``(seed, a, b)`` for every seed both rows of one ``results.json`` have, in seed order."""
    per_seed = results.get("per_seed", {})
    for row in (row_a, row_b):
        if row not in per_seed:
            raise ValueError(f"row {row!r} is not in these results (rows: {', '.join(per_seed) or 'none'})")
    values = {}
    for row in (row_a, row_b):
        for entry in per_seed[row]:
            if metric not in entry:
                raise ValueError(f"metric {metric!r} is not in the results of row {row!r}")
            values.setdefault(entry["seed"], {})[row] = float(entry[metric])
    return [(seed, v[row_a], v[row_b]) for seed, v in sorted(values.items()) if len(v) == 2]


def pooled_comparison(benchmarks: dict[str, dict], row_a: str, row_b: str, metric: str) -> dict[str, Any]:
    """Paired test of ``row_a − row_b`` in each benchmark and over all their seed pairs together."""
    out: dict[str, Any] = {"rows": [row_a, row_b], "metric": metric, "per_benchmark": {}}
    all_a: list[float] = []
    all_b: list[float] = []
    for name, results in benchmarks.items():
        pairs = seed_pairs(results, row_a, row_b, metric)
        if not pairs:
            raise ValueError(f"{name}: the two rows share no seed")
        a, b = [p[1] for p in pairs], [p[2] for p in pairs]
        out["per_benchmark"][name] = {"seeds": [p[0] for p in pairs], **paired_test(a, b)}
        all_a += a
        all_b += b
    out["pooled"] = paired_test(all_a, all_b)
    # Each row's own mean over the pooled pairs' seeds (a t-interval over seeds, not paired).
    out["pooled_rows"] = {row_a: mean_ci(all_a), row_b: mean_ci(all_b)}
    return out


def load_results(path: Path) -> dict:
    """``results.json`` of a benchmark directory (or the file itself)."""
    file = path / "results.json" if path.is_dir() else path
    if not file.is_file():
        raise ValueError(f"{path}: no results.json (give a `rlur benchmark --out` directory)")
    return json.loads(file.read_text())


def _line(name: str, r: dict) -> str:
    return (f"{name:<40s} {r['diff']:+.4f}  [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]  p = {r['p_value']:.3g}"
            f"  (n = {r['n']})")


def markdown_table(comparisons: list[dict[str, Any]], benchmarks: list[str]) -> str:
    """One row per comparison, one column per metric: the pooled difference, its CI and p."""
    metrics = list(dict.fromkeys(c["metric"] for c in comparisons))
    pairs = list(dict.fromkeys(tuple(c["rows"]) for c in comparisons))
    cell = {(tuple(c["rows"]), c["metric"]): (c["pooled"], c["pooled_rows"]) for c in comparisons}
    lines = [
        f"Pooled paired t-tests over {len(benchmarks)} benchmarks ({', '.join(f'`{b}`' for b in benchmarks)}); "
        "seed i of one row against seed i of the other inside each benchmark. Difference A − B, "
        "95 % t-interval, p; in brackets after n, the two rows' means over the same seeds.",
        "",
        "| A − B | " + " | ".join(metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    for a, b in pairs:
        cells = []
        for m in metrics:
            r, rows = cell[(a, b), m]
            cells.append(f"{r['diff']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}], p = {r['p_value']:.2g} "
                         f"(n = {r['n']}; {rows[a]['mean']:.3f} − {rows[b]['mean']:.3f})")
        lines.append(f"| {a} − {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("benchmarks", nargs="+", type=Path, help="`rlur benchmark --out` directories")
    ap.add_argument("--rows", action="append", required=True,
                    help="A,B: the difference reported is A − B (repeat for more comparisons)")
    ap.add_argument("--metrics", default="avg_return_day", help="comma-separated metrics")
    ap.add_argument("--out", type=Path, help="write the comparisons as JSON")
    ap.add_argument("--markdown", type=Path, help="write the pooled tests as a markdown table")
    args = ap.parse_args(argv)
    comparisons = []
    try:
        benchmarks = {str(p): load_results(p) for p in args.benchmarks}
        for spec in args.rows:
            rows = spec.split(",")
            if len(rows) != 2 or not all(rows):
                raise ValueError(f"--rows needs two rows A,B, got {spec!r}")
            for metric in args.metrics.split(","):
                comparisons.append(pooled_comparison(benchmarks, rows[0], rows[1], metric))
    except ValueError as exc:
        print(f"pooled_comparison: error: {exc}", file=sys.stderr)
        return 2
    for c in comparisons:
        print(f"{c['rows'][0]} − {c['rows'][1]}, {c['metric']}: difference, 95 % CI, paired t-test")
        for name, r in c["per_benchmark"].items():
            print(_line(name, r))
        print(_line("pooled", c["pooled"]))
        for row, m in c["pooled_rows"].items():
            print(f"  {row} over the same seeds: {m['mean']:.4f}  [{m['ci_low']:.4f}, {m['ci_high']:.4f}]")
    if args.out:
        args.out.write_text(json.dumps(comparisons, indent=2))
    if args.markdown:
        args.markdown.write_text(markdown_table(comparisons, list(benchmarks)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
