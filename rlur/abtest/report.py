"""The A/B report: ``report.json`` (everything), ``report.md`` (the table a reader wants) and ``daily.png``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rlur.abtest.analysis import METRICS, analyze
from rlur.abtest.experiment import ARM_NAMES, ExperimentResult
from rlur.training.checkpoint import atomic_write_bytes, atomic_write_json

__all__ = ["build_report", "plot_daily", "report_markdown", "write_report"]


def _clean(x: Any) -> Any:
    """JSON-safe: NaN/inf → None, recursively."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


def build_report(result: ExperimentResult) -> dict:
    """The full report dict of a simulated test (what ``report.json`` holds)."""
    cfg = result.config
    stats = analyze(result.table, result.arm, alpha=cfg.alpha, shares=cfg.shares)
    table = result.table
    return _clean({
        "config": cfg.to_dict(),
        "kind": "A/A" if cfg.aa else "A/B",
        "arms": {info["name"]: {**info, "metrics": stats["arms"][info["name"]]} for info in result.arms},
        "lifts": stats["lifts"],
        "mde": stats["mde"],
        "srm": stats["srm"],
        "alpha": stats["alpha"],
        "power": stats["power"],
        "method": stats["method"],
        "daily": stats["daily"],
        "totals": {"requests": int(table.requests.sum()), "sessions": int(table.opens.sum()),
                   "user_days_active": int(table.active.sum())},
        "timing": result.timing,
        "notes": result.notes,
    })


def _world_label(cfg: dict) -> str:
    """Which world the test ran in: a learned one, or the built-in one's seed (and preset, if not the default)."""
    if cfg.get("world_path"):
        return f"learned world {cfg['world_path']}"
    preset = cfg.get("world_preset", "default")
    return f"world seed {cfg['world_seed']}" + ("" if preset == "default" else f" (preset `{preset}`)")


def _pct(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{100 * x:+.{digits}f} %"


def _mde(x: float | None) -> str:
    return "n/a" if x is None else f"±{100 * x:.3f} %"


def report_markdown(report: dict) -> str:
    """A short human-readable summary: lifts with CIs and p-values, MDE, SRM."""
    cfg = report["config"]
    arms = report["arms"]
    alpha = report["alpha"]
    lines = [
        f"# Simulated {report['kind']} test",
        "",
        f"{cfg['users']:,} users × {cfg['days']} days, population seed {cfg['seed']}, "
        f"{_world_label(cfg)}, "
        f"salt `{cfg['salt']}`, {'online learning' if cfg['online'] else 'frozen policies'}, α = {alpha:g}.",
        "",
        "| arm | policy | serving | users | share |",
        "|---|---|---|---:|---:|",
    ]
    for name in ARM_NAMES:
        a = arms[name]
        lines.append(f"| {name} | `{a['spec']}` ({a.get('algo', '')}) | {a.get('serving', '')} | {a['users']:,} | "
                     f"{a['share']:g} |")
    srm = report["srm"]
    lines += [
        "",
        f"Sample-ratio check: χ² = {srm['chi2']:.3f}, p = {srm['p_value']:.3g} — "
        + ("**MISMATCH: do not trust the lifts**" if srm["mismatch"] else "no mismatch") + ".",
        "",
        f"| metric | control | treatment | relative lift | {100 * (1 - alpha):g} % CI | p-value | MDE (power "
        f"{report['power']:g}) | verdict |",
        "|---|---:|---:|---:|---|---:|---:|---|",
    ]
    for spec in METRICS:
        lift = report["lifts"].get(spec.name)
        if lift is None:
            continue
        c, t = lift["control"], lift["treatment"]
        fmt = (lambda v: "n/a" if v is None else f"{v:.4g}")  # noqa: E731
        p = "n/a" if lift["p_value"] is None else f"{lift['p_value']:.3g}"
        label = spec.label.replace("|", "\\|")  # a pipe would split the markdown cell
        lines.append(
            f"| {label}{' (↓ better)' if not spec.higher_is_better else ''} | {fmt(c)} | {fmt(t)} | "
            f"{_pct(lift['estimate'])} | [{_pct(lift['ci_low'])}, {_pct(lift['ci_high'])}] | {p} | "
            f"{_mde(report['mde'].get(spec.name))} | {lift['verdict']} |"
        )
    tm = report["timing"]
    lines += [
        "",
        f"Statistics: {report['method']}. Daily lifts: `daily.png`; all numbers: `report.json`.",
        "",
        f"Simulated {tm['requests']:,} requests in {tm['seconds']:.1f} s ({tm['requests_per_s']:,.0f} requests/s).",
    ]
    lines += [f"\nNote: {n}" for n in report.get("notes", [])]
    return "\n".join(lines) + "\n"


def _percent_series(values: list[float | None]) -> list[float]:
    return [float("nan") if v is None else 100 * v for v in values]


def plot_daily(report: dict, path: str | Path) -> None:
    """One panel per metric: the daily relative lift with its CI band and the whole-test lift."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [m for m in METRICS if m.name in report["lifts"]]
    cols = 3
    rows = max(1, math.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    daily = report["daily"]
    for ax, spec in zip(axes.flat, names, strict=False):
        series = daily["lift"][spec.name]
        days = list(range(len(series["estimate"])))
        level = f"{100 * (1 - report['alpha']):g} %"
        ax.fill_between(days, _percent_series(series["ci_low"]), _percent_series(series["ci_high"]), alpha=0.25,
                        color="C0", label=f"daily {level} CI")
        ax.plot(days, _percent_series(series["estimate"]), "o-", color="C0", ms=3, label="daily lift")
        whole = report["lifts"][spec.name]["estimate"]
        if whole is not None:
            ax.axhline(100 * whole, color="C1", ls="--", lw=1, label="whole test")
        ax.axhline(0, color="k", lw=0.8)
        ax.set_title(f"{spec.name} ({'higher' if spec.higher_is_better else 'lower'} is better)", fontsize=9)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("day" + (f" t (t vs t+{spec.lag})" if spec.lag else ""), fontsize=8)
        ax.set_ylabel("treatment vs control (%)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{report['kind']} test: daily relative lift, {report['arms']['treatment']['spec']} vs "
                 f"{report['arms']['control']['spec']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(result: ExperimentResult, out: str | Path) -> dict:
    """Write ``report.json``, ``report.md`` and ``daily.png`` into ``out``; return the report dict."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = build_report(result)
    atomic_write_json(report, out / "report.json")
    atomic_write_bytes(report_markdown(report).encode(), out / "report.md")
    plot_daily(report, out / "daily.png")
    return report
