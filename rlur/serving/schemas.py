"""Request and response schemas of the ranking API, validated by pydantic into numpy arrays.

One :class:`RankRequest` is one ranking request. Its candidates come in one of three forms, all
validated by the same model (so ``/v1/rank`` and ``/v1/rank:batch`` accept exactly the same items):

* ``candidates``: a list of ``{"id": …, "scores": {name: value, …}}`` (or ``"scores"`` as a list of
  the k values in ``SCORE_NAMES`` order): readable, but one object per candidate is the slowest form;
* ``candidate_ids`` + ``scores``: the ids, and a ``C × k`` nested list of values in ``SCORE_NAMES``
  order (columnar: no per-candidate object);
* ``candidate_ids`` + ``scores_hex``: the ``C × k`` values as hex of little-endian float32 in
  row-major order (no float parsing at all; the fast path for high-throughput callers). Hex, not
  base64: CPython 3.11 decodes hex about 3× faster (``bytes.fromhex`` vs ``base64.b64decode``).

Numeric checks (finite, bounded, shapes) run on numpy arrays, never per candidate in Python; the
validated arrays are kept on the model and handed to the ranker through :meth:`RankRequest.to_input`.
Limits that a server configures (``max_candidates``, ``max_batch``) come in the validation
``context``; without one the defaults below apply.

The JSON Schema of each model states every rule the validators enforce that JSON Schema can state
(``oneOf`` over the three forms, item counts, bounds, ``uniqueItems``, string patterns), so a client
generated from it, or a fuzzer, sends nothing valid that the server refuses. Three rules relate
fields to each other and are only described (``x-rlur-rules``): the score rows number as many as
``candidate_ids``; the ``id``s of ``candidates`` are distinct; the ``request_id``s of a batch are
distinct. ``rlur.serving.schemathesis_hooks`` applies them to generated requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from typing_extensions import TypedDict

from rlur.sim.env import OBS_DIM
from rlur.sim.world import GROUPS, SCORE_NAMES

__all__ = [
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_CANDIDATES",
    "INT64_MAX",
    "INT64_MIN",
    "MAX_ABS_SCORE",
    "MAX_ABS_STATE",
    "SLATE_SIZE",
    "Candidate",
    "ErrorDetail",
    "HealthResponse",
    "MessageResponse",
    "NotReadyResponse",
    "RankBatchRequest",
    "RankBatchResponse",
    "RankInput",
    "RankRequest",
    "RankResponse",
    "ReadyResponse",
    "ReloadResponse",
    "ValidationErrorResponse",
    "apply_limits",
]

#: Number of candidates shown per request (the slate); a request must bring at least this many.
SLATE_SIZE = 6
DEFAULT_MAX_CANDIDATES = 1000
DEFAULT_MAX_BATCH = 1024
#: Scores must lie strictly inside ±2^50 (≈ 1.1e15): the float32 fusion score stays finite, and in
#: ``scores_hex`` the bound is a pattern on each float's exponent bits (see :data:`HEX_FLOAT`).
MAX_ABS_SCORE = 2.0**50
#: States must lie within ±1e6 (inclusive): the actor's forward pass stays finite.
MAX_ABS_STATE = 1e6
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: Text without control characters (Unicode category Cc: U+0000–U+001F, U+007F–U+009F).
NO_CONTROL_CHARS = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"

K = len(SCORE_NAMES)
#: One little-endian float32 in hex with magnitude below 2^50 (biased exponent at most 176): the
#: sign/exponent byte comes last, and at exponent 176/177 the boundary is the top bit of byte 2.
HEX_FLOAT = (
    "[0-9a-fA-F]{4}(?:[0-9a-fA-F]{2}(?:[0-48-9a-cA-C][0-9a-fA-F]|[5dD][0-7])|[0-7][0-9a-fA-F][5dD]8)"
)

GroupName = Literal[GROUPS]  # type: ignore[valid-type]


def json_int(lo: int, hi: int) -> Any:
    """A JSON integer in ``[lo, hi]``, as JSON Schema defines one: ``7`` and also ``7.0`` (the same number
    in the JSON data model); ``7.5``, ``"7"`` and ``true`` are not. A number written with a fraction or
    exponent is read as the float64 it denotes, exact up to 2^53."""

    def integral(x: Any) -> int:  # reached only when the integer branch failed
        if not (type(x) is float and x.is_integer() and lo <= x <= hi):
            raise ValueError(f"Input should be an integer in [{lo}, {hi}]")
        return int(x)

    exact = Annotated[int, Field(ge=lo, le=hi)]
    return Annotated[
        Union[exact, Annotated[float, PlainValidator(integral)]],  # noqa: UP007 (a union of Annotated types)
        Field(union_mode="left_to_right"),
        WithJsonSchema({"type": "integer", "minimum": lo, "maximum": hi}),
    ]


#: The one candidate id type: an integer within int64.
CandidateId = json_int(INT64_MIN, INT64_MAX)
UserId = json_int(INT64_MIN, INT64_MAX) | Annotated[str, Field(max_length=256, pattern=NO_CONTROL_CHARS)]
# Bounds and finiteness of floats are checked on whole arrays (numpy); the schema states them per item.
Score = Annotated[float, WithJsonSchema(
    {"type": "number", "exclusiveMinimum": -MAX_ABS_SCORE, "exclusiveMaximum": MAX_ABS_SCORE}
)]
StateValue = Annotated[float, WithJsonSchema({"type": "number", "minimum": -MAX_ABS_STATE, "maximum": MAX_ABS_STATE})]
ScoreRow = Annotated[list[Score], Field(min_length=K, max_length=K)]

_STRICT = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid")


def _limit(info: ValidationInfo, key: str, default: int) -> int:
    ctx = info.context
    return int(ctx.get(key, default)) if isinstance(ctx, dict) else default


def _check_ids(ids: list[Any], name: str, info: ValidationInfo) -> None:
    """Count within ``[SLATE_SIZE, max_candidates]`` and no duplicate ids."""
    n, most = len(ids), _limit(info, "max_candidates", DEFAULT_MAX_CANDIDATES)
    if n < SLATE_SIZE:
        raise ValueError(f"{name} must hold at least {SLATE_SIZE} candidates (the slate size), got {n}")
    if n > most:
        raise ValueError(f"{name} holds {n} candidates, more than the maximum of {most}")
    if len(set(ids)) != n:
        seen: dict[Any, int] = {}
        for i, c in enumerate(ids):
            if c in seen:
                raise ValueError(f"duplicate candidate id {c!r} in {name} (positions {seen[c]} and {i})")
            seen[c] = i


def _check_scores(arr: np.ndarray, name: str) -> np.ndarray:
    """``arr`` (C, k) as float32, after checking (in its own precision) ``|x| < MAX_ABS_SCORE``."""
    if arr.size and not (arr.min() > -MAX_ABS_SCORE and arr.max() < MAX_ABS_SCORE):  # NaN fails too
        bad = ~(np.abs(arr) < MAX_ABS_SCORE)
        row, col = (int(v) for v in np.argwhere(bad)[0])
        raise ValueError(f"{name}[{row}] ({SCORE_NAMES[col]}) must be finite with magnitude below 2^50")
    return arr.astype(np.float32, copy=False)


def _to_f64(values: Any) -> np.ndarray:
    """JSON numbers as float64: the bound is checked before rounding to float32."""
    return np.asarray(values, dtype=np.float64)


#: The k scores by name: every name required, no other key (pydantic-core checks it, without Python).
NamedScores = TypedDict("NamedScores", dict.fromkeys(SCORE_NAMES, Score))  # type: ignore[misc]
NamedScores.__pydantic_config__ = _STRICT  # type: ignore[attr-defined]


class Candidate(BaseModel):
    """One candidate video: its id and its k point-wise predicted scores."""

    model_config = _STRICT

    id: CandidateId = Field(description="candidate id: an integer within int64, distinct within the request")
    scores: NamedScores | ScoreRow = Field(
        description=f"the k={K} predicted scores: an object keyed by score name ({', '.join(SCORE_NAMES)}), "
        "or a list of the k values in that order",
    )

    def row(self) -> list[float]:
        """The scores in ``SCORE_NAMES`` order (validated dicts keep the schema's key order)."""
        s = self.scores
        return list(s.values()) if isinstance(s, dict) else s


@dataclass
class RankInput:
    """A validated request, as arrays: what :meth:`rlur.serving.ranker.Ranker.rank` consumes."""

    state: Any
    """``(OBS_DIM,)`` user state (a list of floats or a float32 array)."""
    group: int
    """Index into ``GROUPS``."""
    ids: list[Any]
    """Candidate ids, in request order."""
    scores: np.ndarray
    """``(C, k)`` float32 predicted scores in ``SCORE_NAMES`` order."""
    deterministic: bool = False
    seed: int | None = None
    user_id: int | str | None = None
    request_id: str | None = None


_FORMS = ("candidates", "candidate_ids", "scores", "scores_hex")


def _only(*present: str) -> dict[str, Any]:
    """JSON Schema: these form fields present, the other form fields absent."""
    absent = [{"required": [f]} for f in _FORMS if f not in present]
    return {"required": list(present), "not": {"anyOf": absent}}


def hex_pattern(max_candidates: int) -> str:
    """The ``scores_hex`` pattern: ``SLATE_SIZE`` to ``max_candidates`` rows of k bounded float32."""
    return f"^(?:(?:{HEX_FLOAT}){{{K}}}){{{SLATE_SIZE},{max_candidates}}}$"


def _request_schema(schema: dict[str, Any]) -> None:
    """The candidate forms as ``oneOf``; the form fields may be absent but never ``null``."""
    for name in _FORMS:
        schema["properties"][name].pop("default", None)
    schema["oneOf"] = [_only("candidates"), _only("candidate_ids", "scores"), _only("candidate_ids", "scores_hex")]
    schema["x-rlur-rules"] = [
        "'scores' has one row, and 'scores_hex' 32 bytes (64 hex digits), per 'candidate_ids' entry",
        "the 'id's of 'candidates' are distinct",
    ]


def _count(max_items: int) -> dict[str, Any]:
    return {"minItems": SLATE_SIZE, "maxItems": max_items}


class RankRequest(BaseModel):
    """One ranking request: the user's state and group, and the candidates to rank.

    After validation the model is normalised, whatever the wire form: ``candidate_ids`` holds the id
    list and ``scores`` the ``(C, k)`` float32 array (also for the ``candidates`` and ``scores_hex``
    forms). :meth:`to_input` hands them to the ranker.
    """

    model_config = ConfigDict(
        strict=True, allow_inf_nan=False, extra="forbid",
        json_schema_extra=lambda schema: (_request_schema(schema), schema.update(examples=[{
            "state": [0.0] * OBS_DIM, "group": "high", "deterministic": False, "user_id": "u42", "seed": 7,
            "candidates": [{"id": j, "scores": dict.fromkeys(SCORE_NAMES, 0.1)} for j in range(6)],
        }]))[0],
    )

    state: Annotated[list[StateValue], Field(min_length=OBS_DIM, max_length=OBS_DIM)] = Field(
        description=f"the user state: {OBS_DIM} floats within ±{MAX_ABS_STATE:g}, laid out as "
        "rlur.sim.env.OBS_FIELDS",
    )
    group: GroupName = Field(description=f"the user's activity group, one of {list(GROUPS)}")
    candidates: list[Candidate] = Field(
        None, description="candidates as objects with distinct ids (give this, or candidate_ids with scores "
        "or scores_hex)", json_schema_extra=_count(DEFAULT_MAX_CANDIDATES),
    )
    candidate_ids: list[CandidateId] = Field(
        None, description="distinct candidate ids (columnar forms)",
        json_schema_extra={**_count(DEFAULT_MAX_CANDIDATES), "uniqueItems": True},
    )
    scores: list[ScoreRow] = Field(
        None, description=f"C × {K} scores in SCORE_NAMES order, one row per candidate_ids entry",
        json_schema_extra=_count(DEFAULT_MAX_CANDIDATES),
    )
    scores_hex: str = Field(
        None, description=f"C × {K} scores as hex of little-endian float32, row-major, SCORE_NAMES order "
        "(numpy: scores.astype('<f4').tobytes().hex()); each magnitude below 2^50",
        json_schema_extra={"pattern": hex_pattern(DEFAULT_MAX_CANDIDATES)},
    )
    deterministic: bool = Field(False, description="serve a = μ instead of sampling a ~ N(μ, σ)")
    user_id: UserId | None = Field(
        None, description="opaque user id (an int64, or up to 256 characters without control characters), "
        "written to the request log",
    )
    seed: json_int(0, INT64_MAX) | None = Field(  # type: ignore[valid-type]
        None, description="seed of this request's action noise (same seed and policy → same ranking)",
    )
    request_id: Annotated[str, Field(min_length=1, max_length=128, pattern=NO_CONTROL_CHARS)] | None = Field(
        None, description="client-chosen request id, without control characters (default: a server-generated "
        "UUID); distinct within a batch",
    )

    @field_validator("state")
    @classmethod
    def _state_bounded(cls, v: list[float]) -> list[float]:
        # Stays a list: the ranker converts all states of a batch to one array in a single call.
        if not (min(v) >= -MAX_ABS_STATE and max(v) <= MAX_ABS_STATE):
            i = next(i for i, x in enumerate(v) if abs(x) > MAX_ABS_STATE)
            raise ValueError(f"state[{i}] has magnitude above {MAX_ABS_STATE:g}")
        return v

    @field_validator("candidates")
    @classmethod
    def _candidates_ok(cls, v: list[Candidate], info: ValidationInfo) -> list[Candidate]:
        _check_ids([c.id for c in v], "candidates", info)
        return v

    @field_validator("candidate_ids")
    @classmethod
    def _ids_ok(cls, v: list[int], info: ValidationInfo) -> list[int]:
        _check_ids(v, "candidate_ids", info)
        return v

    @field_validator("scores")
    @classmethod
    def _scores_array(cls, v: list[list[float]]) -> np.ndarray:
        return _check_scores(_to_f64(v).reshape(-1, K), "scores")

    @field_validator("scores_hex")
    @classmethod
    def _hex_array(cls, v: str) -> np.ndarray:
        try:
            raw = bytes.fromhex(v)
        except ValueError:
            raise ValueError("scores_hex is not a hexadecimal string") from None
        if 2 * len(raw) != len(v):  # bytes.fromhex skips whitespace; the pattern allows none
            raise ValueError("scores_hex is not a hexadecimal string (no spaces allowed)")
        if len(raw) % (4 * K):
            raise ValueError(f"scores_hex must hold a multiple of {4 * K} bytes (rows of {K} float32)")
        return _check_scores(np.frombuffer(raw, dtype="<f4").reshape(-1, K), "scores_hex")

    @model_validator(mode="after")
    def _arrays(self) -> RankRequest:
        d = self.__dict__  # plain writes: the values are validated already
        if (self.candidates is not None) == (self.candidate_ids is not None):
            raise ValueError("give either 'candidates', or 'candidate_ids' with 'scores' or 'scores_hex'")
        if self.candidates is not None:
            if self.scores is not None or self.scores_hex is not None:
                raise ValueError("'scores'/'scores_hex' go with 'candidate_ids', not with 'candidates'")
            d["candidate_ids"] = [c.id for c in self.candidates]
            d["scores"] = _check_scores(_to_f64([c.row() for c in self.candidates]), "candidates")
            return self
        if (self.scores is None) == (self.scores_hex is None):
            raise ValueError("'candidate_ids' needs exactly one of 'scores' or 'scores_hex'")
        name = "scores" if self.scores is not None else "scores_hex"
        scores: np.ndarray = d[name]
        if scores.shape[0] != len(self.candidate_ids):
            n = len(self.candidate_ids)
            raise ValueError(f"'{name}' has {scores.shape[0]} rows but 'candidate_ids' has {n}")
        d["scores"] = scores
        return self

    def to_input(self) -> RankInput:
        """The validated request as arrays."""
        return RankInput(
            self.state, GROUPS.index(self.group), self.candidate_ids, self.scores,  # type: ignore[arg-type]
            self.deterministic, self.seed, self.user_id, self.request_id,
        )


class RankBatchRequest(BaseModel):
    """Many ranking requests served in one call (one forward pass, one vectorised scoring)."""

    model_config = ConfigDict(
        strict=True, extra="forbid",
        json_schema_extra={"x-rlur-rules": ["the 'request_id's given in 'requests' are distinct"]},
    )

    requests: list[RankRequest] = Field(
        description="the requests, each exactly as for /v1/rank",
        json_schema_extra={"minItems": 1, "maxItems": DEFAULT_MAX_BATCH},
    )

    @field_validator("requests")
    @classmethod
    def _size(cls, v: list[RankRequest], info: ValidationInfo) -> list[RankRequest]:
        most = _limit(info, "max_batch", DEFAULT_MAX_BATCH)
        if not 1 <= len(v) <= most:
            raise ValueError(f"requests must hold 1 to {most} requests, got {len(v)}")
        rids = [r.request_id for r in v if r.request_id is not None]
        if len(set(rids)) != len(rids):
            first: dict[str, int] = {}
            for i, r in enumerate(v):
                if r.request_id is not None and first.setdefault(r.request_id, i) != i:
                    raise ValueError(
                        f"duplicate request_id {r.request_id!r} (requests {first[r.request_id]} and {i})"
                    )
        return v


def apply_limits(schemas: dict[str, Any], max_candidates: int, max_batch: int) -> None:
    """Write a server's configured limits into the component schemas (``RankRequest``, ``RankBatchRequest``)."""
    props = schemas["RankRequest"]["properties"]
    for name in ("candidates", "candidate_ids", "scores"):
        props[name]["maxItems"] = max_candidates
    props["scores_hex"]["pattern"] = hex_pattern(max_candidates)
    schemas["RankBatchRequest"]["properties"]["requests"]["maxItems"] = max_batch

class RankResponse(BaseModel):
    """What was served: the slate, and the behaviour policy's action and density (for training)."""

    request_id: str
    top_ids: list[CandidateId] = Field(description=f"the {SLATE_SIZE} shown candidate ids, best first")
    action: list[float] = Field(description="the served action a in R^k (clipped to [-1, 1] when ranking)")
    mu: list[float] = Field(description="the behaviour policy's mean μ(s)")
    sigma: list[float] = Field(description="the behaviour policy's standard deviation σ(s)")
    log_prob: float = Field(description="log N(a; μ, diag σ²), summed over the k dimensions")
    policy_version: str


class RankBatchResponse(BaseModel):
    """One :class:`RankResponse` per request, in request order, all from one policy version."""

    results: list[RankResponse]
    policy_version: str


class ReloadResponse(BaseModel):
    """Result of ``POST /admin/reload``."""

    policy_version: str
    previous_version: str | None
    changed: bool


class ErrorDetail(BaseModel):
    """One validation error (FastAPI's ``detail`` entries, without the echoed input)."""

    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorResponse(BaseModel):
    """Body of a 422 response."""

    detail: list[ErrorDetail]


class MessageResponse(BaseModel):
    """Body of a 403, 409, 413 or 503 response."""

    detail: str


class HealthResponse(BaseModel):
    """Body of ``GET /healthz``."""

    status: Literal["ok"]


class ReadyResponse(BaseModel):
    """Body of ``GET /readyz`` once a policy is loaded (200)."""

    ready: Literal[True]
    policy_version: str
    algo: str
    sha256: str
    source: str
    policy_type: str
    weight_max: float


class NotReadyResponse(BaseModel):
    """Body of ``GET /readyz`` before a policy is loaded (503); ``error`` says why the last load failed."""

    ready: Literal[False]
    error: str | None
