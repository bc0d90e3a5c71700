"""``python -m rlur.live --role joiner|trainer --out DIR``: one role of the production loop (see roles.py)."""

import argparse
import sys

from rlur.live.roles import ROLES, run_role


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m rlur.live", description="Run one role of `rlur live`.")
    ap.add_argument("--role", required=True, choices=ROLES)
    ap.add_argument("--out", required=True, help="the run directory of `rlur live --out DIR`")
    args = ap.parse_args()
    try:
        return run_role(args.role, args.out)
    except (FileNotFoundError, ValueError, TimeoutError) as err:
        print(f"rlur live: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
