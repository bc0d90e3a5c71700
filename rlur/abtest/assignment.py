"""Deterministic traffic assignment and the sample-ratio-mismatch (SRM) check.

A user goes to an arm by a hash of ``f"{salt}:{user_id}"`` (BLAKE2b, 64-bit digest) mapped to a
uniform number ``u ∈ [0, 1)``; the arm is the first whose cumulative traffic share exceeds ``u``.
The same (salt, user) always lands in the same arm, different salts give independent splits, and
the split does not depend on anything the simulation produces (so it cannot cause an SRM).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from scipy import stats as _st

__all__ = ["SRM_THRESHOLD", "assign_arms", "hash_unit", "parse_shares", "srm_test", "validate_shares"]

#: p-value below which the sample-ratio check flags a mismatch (the usual, deliberately strict, 0.001).
SRM_THRESHOLD = 1e-3
_SCALE = float(2**64)


def hash_unit(user_ids: Sequence[int] | np.ndarray, salt: str) -> np.ndarray:
    """``u ∈ [0, 1)`` per user: BLAKE2b-64 of ``f"{salt}:{user_id}"`` divided by 2^64 (float64)."""
    out = np.empty(len(user_ids), dtype=np.float64)
    prefix = f"{salt}:".encode()
    for i, uid in enumerate(user_ids):  # hashing is per string; ~1 µs per user
        digest = hashlib.blake2b(prefix + str(int(uid)).encode(), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "big") / _SCALE
    return out


def validate_shares(shares: Sequence[float], n_arms: int = 2) -> tuple[float, ...]:
    """Check ``shares``: ``n_arms`` positive finite numbers summing to 1 (±1e-6). Raises ``ValueError``."""
    values = tuple(float(s) for s in shares)
    if len(values) != n_arms:
        raise ValueError(f"--shares needs {n_arms} values (control, treatment), got {len(values)}")
    if not all(np.isfinite(values)) or min(values) <= 0:
        raise ValueError(f"--shares must all be positive, got {','.join(f'{v:g}' for v in values)}")
    if abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"--shares must sum to 1, got {','.join(f'{v:g}' for v in values)} (sum {sum(values):g})")
    return values


def parse_shares(text: str, n_arms: int = 2) -> tuple[float, ...]:
    """Parse ``"0.5,0.5"`` and validate it (see :func:`validate_shares`)."""
    try:
        values = [float(p) for p in text.split(",")]
    except ValueError:
        raise ValueError(f"--shares must be comma-separated numbers, got {text!r}") from None
    return validate_shares(values, n_arms)


def assign_arms(user_ids: Sequence[int] | np.ndarray, salt: str, shares: Sequence[float]) -> np.ndarray:
    """Arm index (0 = control, 1 = treatment, …) of each user, by cumulative traffic shares."""
    values = validate_shares(shares, len(shares))
    edges = np.cumsum(values)
    edges[-1] = 1.0  # guard against rounding: every u < 1 lands in some arm
    return np.searchsorted(edges, hash_unit(user_ids, salt), side="right").astype(np.int64)


def srm_test(counts: Sequence[int], shares: Sequence[float], threshold: float = SRM_THRESHOLD) -> dict:
    """Chi-square goodness of fit of the observed arm sizes to the traffic shares.

    Returns ``{counts, expected, chi2, df, p_value, threshold, mismatch}``; ``mismatch`` is
    ``p_value < threshold``: the assignment (or the logging) is broken and no lift can be trusted.
    """
    obs = np.asarray(counts, dtype=np.float64)
    exp = obs.sum() * np.asarray(shares, dtype=np.float64)
    chi2 = float(((obs - exp) ** 2 / exp).sum())
    df = len(obs) - 1
    p = float(_st.chi2.sf(chi2, df))
    return {
        "counts": [int(c) for c in obs], "expected": exp.tolist(), "chi2": chi2, "df": df, "p_value": p,
        "threshold": threshold, "mismatch": bool(p < threshold),
    }
