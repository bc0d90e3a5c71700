"""``rlur data``: download KuaiRand-Pure, check it, fit a learned world, write a synthetic fixture.

Sub-commands::

    rlur data download kuairand-pure --dest DIR     # fetch, verify, unpack into DIR/KuaiRand-Pure
    rlur data check --kuairand DIR                  # validate the files and print a summary
    rlur data fit --kuairand DIR --out WORLD        # fit the learned simulator (world.pt, fit_report.md)
    rlur data fixture --out DIR                     # a small synthetic KuaiRand-format folder
    rlur data export --from RUN --format minari --out NAME   # a run's transitions as a Minari dataset

Until ``rlur.data.commands`` is listed in ``rlur.cli.COMMAND_MODULES`` the same commands run as
``python -m rlur.data.commands data …``.
"""

from __future__ import annotations

import argparse
import json
import sys

from rlur.cli import check_writable, non_negative_int, positive_float, positive_int

__all__ = ["main", "register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="KuaiRand data: download, check, fit a learned simulator, write a fixture",
                       description="Work with the KuaiRand-Pure data set and the learned simulator built from it.")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION", parser_class=type(p))

    d = dsub.add_parser("download", help="download, verify and unpack a data set",
                        description="Download KuaiRand-Pure from Zenodo (record 10439422), verify its checksums, "
                                    "and unpack it safely into DEST/KuaiRand-Pure.")
    d.add_argument("dataset", choices=["kuairand-pure"], help="data set to fetch")
    d.add_argument("--dest", required=True, help="folder to download and unpack into")
    d.add_argument("--url", help="download from this URL instead (e.g. a mirror or a file:// path)")
    d.add_argument("--archive", help="unpack this already-downloaded archive instead of downloading")
    d.add_argument("--md5", help="expected MD5 of the archive (checked in addition to the pinned checksums)")
    d.add_argument("--no-verify", action="store_true", help="skip the checksum and member-size checks")
    d.add_argument("--force", action="store_true", help="download and unpack again even if already present")
    d.add_argument("--remove-archive", action="store_true", help="delete the .tar.gz after unpacking")
    d.add_argument("--timeout", type=positive_float, default=60.0, help="network timeout in seconds (default 60)")
    d.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    d.set_defaults(func=run_download)

    c = dsub.add_parser("check", help="validate a KuaiRand-Pure folder and print a summary",
                        description="Load and validate the logs and feature files (schema, types, duplicates, "
                                    "unknown ids) and print summary statistics as JSON.")
    c.add_argument("--kuairand", required=True, help="KuaiRand-Pure folder (or its data/ folder)")
    c.add_argument("--features-only", action="store_true", help="check only the user and video feature files")
    c.add_argument("--include-random", action="store_true", help="also read the random-exposure log")
    c.add_argument("--drop-duplicates", action="store_true", help="drop duplicate impressions instead of failing")
    c.add_argument("--session-gap-hours", type=positive_float, default=None,
                   help="split sessions at inactivity gaps longer than this (default: a session is a user-day)")
    c.add_argument("--no-progress", action="store_true")
    c.set_defaults(func=run_check)

    f = dsub.add_parser("fit", help="fit the learned simulator (feedback, leave and return models)",
                        description="Fit the immediate-feedback, leave and return models on KuaiRand-Pure and "
                                    "write WORLD/world.pt, WORLD/world.json and WORLD/fit_report.md.")
    f.add_argument("--kuairand", required=True, help="KuaiRand-Pure folder (with data/ inside) or data/ itself")
    f.add_argument("--out", required=True, help="output folder WORLD")
    f.add_argument("--session-gap-hours", type=positive_float, default=None,
                   help="split sessions at inactivity gaps longer than this (default: a session is a user-day)")
    f.add_argument("--max-rows", type=positive_int, default=None,
                   help="use a random subset of users holding at most this many log rows")
    f.add_argument("--epochs", type=positive_int, default=None,
                   help="maximum epochs per model (default: enough for about 1,500 steps; early stopping)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--include-random", action="store_true", help="also train on the random-exposure log")
    f.add_argument("--drop-duplicates", action="store_true", help="drop duplicate impressions instead of failing")
    f.add_argument("--sim-users", type=positive_int, default=2000,
                   help="users simulated for the report's comparison with the logs (default 2000)")
    f.add_argument("--threads", type=non_negative_int, default=0,
                   help="torch threads (default 0: torch's choice; 1 is fastest on a busy machine)")
    f.add_argument("--no-progress", action="store_true")
    f.set_defaults(func=run_fit)

    x = dsub.add_parser("fixture", help="write a small synthetic KuaiRand-format folder",
                        description="Write DIR/KuaiRand-Pure/data/ with synthetic logs and features generated "
                                    "from known hidden rules (for demos and tests).")
    x.add_argument("--out", required=True, help="folder to write into")
    x.add_argument("--users", type=positive_int, default=200)
    x.add_argument("--videos", type=positive_int, default=150)
    x.add_argument("--days", type=positive_int, default=20)
    x.add_argument("--seed", type=int, default=0)
    x.add_argument("--with-random-log", action="store_true", help="also write a small random-exposure log")
    x.set_defaults(func=run_fixture)

    e = dsub.add_parser("export", help="export a live run's log (or a training run's replay) as an offline-RL dataset",
                        description="Write the trainable transitions of an `rlur live` run, or the replay buffer of an "
                                    "`rlur train` run, as a Minari dataset: one episode per user, with states, "
                                    "actions, the paper's rewards and the behaviour policy's log-probabilities "
                                    "(docs/integrations.md). `rlur train --from-minari NAME` reads it back.")
    e.add_argument("--from", dest="source", required=True, metavar="RUN",
                   help="an `rlur live` run directory, or an `rlur train` run of rlur, rlur-naive or td3")
    e.add_argument("--format", choices=["minari"], default="minari", help="dataset format (default: minari)")
    e.add_argument("--out", required=True, metavar="NAME",
                   help="dataset id, e.g. rlur/live-v0, written under MINARI_DATASETS_PATH "
                        "(default ~/.minari/datasets)")
    e.add_argument("--arms", default="all", choices=("all", "control", "treatment"),
                   help="whose traffic to export (default: all)")
    e.set_defaults(func=run_export)


def run_download(args: argparse.Namespace) -> int:
    from rlur.data.download import download_dataset

    check_writable(args.dest, directory=True)
    download_dataset(args.dataset, args.dest, url=args.url, archive=args.archive, md5=args.md5,
                     verify=not args.no_verify, force=args.force, keep_archive=not args.remove_archive,
                     progress=not args.no_progress, timeout=args.timeout)
    return 0


def run_check(args: argparse.Namespace) -> int:
    from rlur.data.kuairand import load_kuairand, summarize_features

    data = load_kuairand(args.kuairand, include_random=args.include_random, drop_duplicates=args.drop_duplicates,
                         features_only=args.features_only, progress=not args.no_progress)
    out = {"folder": str(data.data_dir), "features": summarize_features(data.users, data.videos)}
    if not args.features_only:
        from rlur.data.fit import _video_durations_ms
        from rlur.data.sessions import build_sessions, logged_statistics

        mode = "day" if args.session_gap_hours is None else "gap"
        s = build_sessions(data.logs, data.users.ids, data.videos.ids, _video_durations_ms(data), mode=mode,
                           gap_hours=args.session_gap_hours)
        out["logs"] = {"files": data.log_files, **logged_statistics(s)}
        out["notes"] = data.notes
    print(json.dumps(out, indent=2))
    return 0


def run_fit(args: argparse.Namespace) -> int:
    from rlur.data.fit import FitConfig, fit_world

    out = check_writable(args.out, directory=True)
    cfg = FitConfig(session_gap_hours=args.session_gap_hours, max_rows=args.max_rows, epochs=args.epochs,
                    seed=args.seed, include_random=args.include_random, drop_duplicates=args.drop_duplicates,
                    sim_users=args.sim_users, threads=args.threads or None, progress=not args.no_progress)
    summary = fit_world(args.kuairand, out, cfg)
    m, sim = summary["metrics"], summary["simulated"]["logged"]
    click = m["feedback"]["click"]
    print(f"held-out click AUC {click['auc']:.3f}, log-loss {click['log_loss']:.4f} "
          f"(base {click['base_log_loss']:.4f}); leave AUC {m['leave']['auc']:.3f}; "
          f"return day-1 AUC {m['return']['day1_auc']:.3f}")
    print(f"simulated vs logged: click rate {sim['behaviour_rates']['click']:.4f} vs "
          f"{summary['logged']['behaviour_rates']['click']:.4f}, return-day TV distance {sim['return_day_tv']:.3f}")
    print(f"wrote {out / 'world.pt'}, {out / 'world.json'} and {out / 'fit_report.md'} "
          f"in {summary['seconds']:.0f} s")
    return 0


def run_fixture(args: argparse.Namespace) -> int:
    from rlur.data.fixtures import write_fixture

    check_writable(args.out, directory=True)
    info = write_fixture(args.out, n_users=args.users, n_videos=args.videos, n_days=args.days, seed=args.seed,
                         with_random_log=args.with_random_log)
    print(f"wrote {info.rows:,} impressions of {info.users} users and {info.videos} videos over {info.days} days "
          f"to {info.data_dir}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from rlur.cli import CliError

    try:
        from rlur.integrations.minari import export_run
    except ImportError as err:
        raise CliError(str(err)) from None
    dataset = export_run(args.source, args.out, args.arms)
    print(f"wrote the Minari dataset {args.out}: {dataset.total_episodes} episodes (users), "
          f"{dataset.total_steps} transitions, in {dataset.spec.data_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``rlur data …`` on its own (the same parser and error handling as :func:`rlur.cli.main`)."""
    from rlur import cli

    parser = cli._Parser(prog="rlur", description="rlur data commands")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=cli._Parser))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (cli.CliError, ValueError, FileNotFoundError, PermissionError, IsADirectoryError) as err:
        import os

        if os.environ.get("RLUR_DEBUG"):
            raise
        print(f"rlur: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rlur: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
