"""The ranking API through FastAPI's TestClient: ranking, parity, validation, metrics, reload, request log."""

from __future__ import annotations

import json
import math
import random
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's note about httpx vs httpx2
    from fastapi.testclient import TestClient

from rlur.agents.policy import load_policy
from rlur.serving.app import ServingConfig, create_app
from rlur.serving.request_log import read_request_log
from rlur.serving.schemas import SLATE_SIZE
from rlur.serving.testing import random_request, wait_until_ready, write_demo_checkpoint
from rlur.sim.env import OBS_DIM
from rlur.sim.ranking import action_to_weights, fuse_and_rank
from rlur.sim.world import GROUPS, SCORE_NAMES

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def client(ckpt: Path) -> Iterator[TestClient]:
    app = create_app(ServingConfig(checkpoint=ckpt, log_path=ckpt / "api.sqlite", max_candidates=300))
    with TestClient(app) as c:
        wait_until_ready(c)
        yield c


def rank(client: TestClient, body: Any, path: str = "/v1/rank") -> Any:
    r = client.post(path, json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_response_shape_and_forms_agree(client: TestClient) -> None:
    out = {}
    for form in ("objects", "columnar", "hex"):
        body = random_request(np.random.default_rng(5), 40, form=form, seed=11, user_id="u1")
        out[form] = rank(client, body)
    first = out["objects"]
    assert set(first) == {"request_id", "top_ids", "action", "mu", "sigma", "log_prob", "policy_version"}
    assert len(first["top_ids"]) == SLATE_SIZE == len(set(first["top_ids"]))
    assert all(0 <= i < 40 for i in first["top_ids"])
    assert len(first["action"]) == len(first["mu"]) == len(first["sigma"]) == len(SCORE_NAMES)
    assert first["policy_version"] == "v1"
    for form in ("columnar", "hex"):
        for key in ("top_ids", "action", "mu", "sigma", "log_prob"):
            assert out[form][key] == first[key], (form, key)
    # Scores as an ordered list inside candidate objects are the same request again.
    body = random_request(np.random.default_rng(5), 40, form="objects", seed=11)
    for c in body["candidates"]:
        c["scores"] = [c["scores"][n] for n in SCORE_NAMES]
    assert rank(client, body)["top_ids"] == first["top_ids"]


def test_deterministic_serves_mu(client: TestClient) -> None:
    res = rank(client, random_request(np.random.default_rng(1), 30, form="hex", deterministic=True))
    assert res["action"] == res["mu"]
    sigma = np.array(res["sigma"], dtype=np.float64)
    expected = float(-(np.log(sigma) + 0.5 * math.log(2 * math.pi)).sum())
    assert res["log_prob"] == pytest.approx(expected, rel=1e-5)


def test_unseeded_requests_sample(client: TestClient) -> None:
    body = random_request(np.random.default_rng(2), 30, form="hex")
    actions = {tuple(rank(client, body)["action"]) for _ in range(3)}
    assert len(actions) == 3


@pytest.mark.parametrize("table", [False, True])
def test_parity_with_in_process_policy(tmp_path: Path, table: bool) -> None:
    """Same seed: the served ranking is the in-process ``policy.sample`` + ``fuse_and_rank`` ranking."""
    write_demo_checkpoint(tmp_path, seed=3, version="p", table=table)
    policy, meta = load_policy(tmp_path)
    score_ref = torch.tensor(meta["score_ref"])
    app = create_app(ServingConfig(checkpoint=tmp_path, request_log=False))
    rng = np.random.default_rng(7)
    with TestClient(app) as c:
        wait_until_ready(c)
        for seed in range(12):
            body = random_request(rng, 200, form="hex", seed=seed, deterministic=seed % 4 == 0)
            res = rank(c, body)
            obs = torch.tensor([body["state"]], dtype=torch.float32)
            group = torch.tensor([GROUPS.index(body["group"])])
            out = policy.sample(obs, group, generator=torch.Generator().manual_seed(seed),
                                deterministic=body["deterministic"])
            raw = np.frombuffer(bytes.fromhex(body["scores_hex"]), "<f4")
            scores = torch.from_numpy(raw.reshape(1, -1, 8).copy())
            # Normalised as RetentionEnv.rank does: times 1 / score_ref.
            weights = action_to_weights(out["action"], meta["weight_max"]) * (1.0 / score_ref)
            top = fuse_and_rank(weights, scores)[0].tolist()
            assert res["top_ids"] == [body["candidate_ids"][j] for j in top]
            assert res["action"] == out["action"][0].tolist()
            assert res["mu"] == out["mu"][0].tolist()
            assert res["sigma"] == out["std"][0].tolist()
            assert res["log_prob"] == pytest.approx(out["log_prob"][0].item(), rel=1e-6, abs=1e-6)


def test_batch_matches_single_requests(client: TestClient) -> None:
    rng = np.random.default_rng(3)
    forms = ("objects", "columnar", "hex", "hex", "objects")
    sizes = (6, 7, 50, 200, 13)
    reqs = [
        random_request(rng, n, form=f, seed=100 + i, deterministic=i == 2, id_offset=1000 * i)
        for i, (n, f) in enumerate(zip(sizes, forms, strict=True))
    ]
    batch = rank(client, {"requests": reqs}, "/v1/rank:batch")
    assert batch["policy_version"] == "v1" and len(batch["results"]) == len(reqs)
    assert len({r["request_id"] for r in batch["results"]}) == len(reqs)
    for req, res in zip(reqs, batch["results"], strict=True):
        single = rank(client, req)
        assert res["top_ids"] == single["top_ids"]
        np.testing.assert_allclose(res["action"], single["action"], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(res["sigma"], single["sigma"], rtol=1e-6)


def test_int64_ids_and_ties(client: TestClient) -> None:
    body = random_request(np.random.default_rng(4), 12, form="columnar", deterministic=True)
    body["candidate_ids"] = [2**63 - 1 - i for i in range(6)] + [-(2**63) + i for i in range(6)]
    body["scores"] = [[1.0] * 8] * 12  # all tied: the lowest positions win, in order
    res = rank(client, body)
    assert res["top_ids"] == body["candidate_ids"][:6]


def _post_raw(client: TestClient, content: bytes | str, path: str = "/v1/rank") -> Any:
    r = client.post(path, content=content, headers={"content-type": "application/json"})
    assert r.status_code == 422, (r.status_code, r.text)
    return r.json()["detail"]


def _base(**changes: Any) -> dict[str, Any]:
    body = random_request(np.random.default_rng(9), 8, form="objects")
    body.update(changes)
    return body


def _hex_row(value: float) -> str:
    return np.full(8, value, dtype="<f4").tobytes().hex()


def _bad_cases() -> list[tuple[str, Any, str, str]]:
    """(name, body (dict or raw text), expected field in loc, expected text in msg)."""
    ok = _base()
    cand = ok["candidates"]
    cols = random_request(np.random.default_rng(9), 8, form="columnar")
    hexr = random_request(np.random.default_rng(9), 8, form="hex")
    dup = [dict(c) for c in cand]
    dup[5] = {**dup[5], "id": dup[2]["id"]}
    missing = [dict(c) for c in cand]
    missing[1] = {**missing[1], "scores": {n: 0.1 for n in SCORE_NAMES if n != "like"}}
    unknown = [dict(c) for c in cand]
    unknown[0] = {**unknown[0], "scores": {**unknown[0]["scores"], "likes": 0.2}}
    raw_nan = json.dumps(ok).replace(f'"state": [{ok["state"][0]}', '"state": [NaN', 1)
    wt = cand[3]["scores"]["watch_time"]
    raw_inf = json.dumps(ok).replace(f'"watch_time": {wt}', '"watch_time": Infinity', 1)
    ids8 = cols["candidate_ids"]
    rows = cols["scores"]
    return [
        ("short state", _base(state=[0.1] * 3), "state", "at least"),
        ("long state", _base(state=[0.1] * (OBS_DIM + 1)), "state", "at most"),
        ("NaN in state", raw_nan, "state", "finite"),
        ("huge state", _base(state=[1e30] + [0.0] * (OBS_DIM - 1)), "state", "magnitude"),
        ("inf in scores", raw_inf, "watch_time", "finite"),
        ("float32 overflow", {**cols, "scores": [[1e39] * 8, *rows[1:]]}, "scores", "finite"),
        ("duplicate ids", _base(candidates=dup), "candidates", "duplicate candidate id"),
        ("duplicate ids, columnar", {**cols, "candidate_ids": [*ids8[:7], ids8[0]]}, "candidate_ids", "dup"),
        ("too few", _base(candidates=cand[:5]), "candidates", "at least 6"),
        ("too many", random_request(np.random.default_rng(0), 301, form="hex"), "candidate_ids", "of 300"),
        ("unknown group", _base(group="vip"), "group", "'high'"),
        ("missing score name", _base(candidates=missing), "like", "Field required"),
        ("unknown score name", _base(candidates=unknown), "likes", "Extra inputs are not permitted"),
        ("short score row", {**cols, "scores": [[0.1] * 7, *rows[1:]]}, "scores", "at least 8"),
        ("row count mismatch", {**cols, "scores": cols["scores"][:7]}, "body", "'scores' has 7 rows"),
        ("two forms", {**ok, "candidate_ids": ids8, "scores": rows}, "body", "either"),
        ("no candidates", {"state": ok["state"], "group": "high"}, "body", "either"),
        ("ids without scores", {k: v for k, v in cols.items() if k != "scores"}, "body", "exactly one"),
        ("null form field", {**cols, "scores_hex": None}, "scores_hex", "valid string"),
        ("null candidates", {**cols, "candidates": None}, "candidates", "valid array"),
        ("bad hex", {**hexr, "scores_hex": "zz" * 8}, "scores_hex", "hexadecimal"),
        ("short hex", {**hexr, "scores_hex": hexr["scores_hex"][:-2]}, "scores_hex", "multiple of 32"),
        ("state as string", _base(state="0.1"), "state", "valid array"),
        ("number as string", _base(state=["0.1"] * OBS_DIM), "state", "valid number"),
        ("group as int", _base(group=1), "group", "'high'"),
        ("fractional id", {**cols, "candidate_ids": [i + 0.5 for i in range(8)]}, "candidate_ids", "integer"),
        ("id 1e400", {**cols, "candidate_ids": [*ids8[:7], 1e400]}, "candidate_ids", "integer"),
        ("integral float seed too big", _base(seed=2.0**63), "seed", "integer in [0, "),
        ("bool id", {**cols, "candidate_ids": [True, *ids8[1:]]}, "candidate_ids", "integer"),
        ("string id", {**cols, "candidate_ids": ["1", *ids8[1:]]}, "candidate_ids", "valid integer"),
        ("string id in objects", _base(candidates=[{**cand[0], "id": "v0"}, *cand[1:]]), "id", "valid integer"),
        ("id above int64", {**cols, "candidate_ids": [2**63, *ids8[1:]]}, "candidate_ids", "less than or equal"),
        ("id 2^70", {**cols, "candidate_ids": [2**70, *ids8[1:]]}, "candidate_ids", "less than or equal"),
        ("id below int64", {**cols, "candidate_ids": [-(2**63) - 1, *ids8[1:]]}, "candidate_ids", "greater than"),
        ("id -2^70", _base(candidates=[{**cand[0], "id": -(2**70)}, *cand[1:]]), "id", "greater than"),
        ("NUL in request_id", _base(request_id="a\x00b"), "request_id", "pattern"),
        ("control char in user_id", _base(user_id="u\x1b[1m"), "user_id", "pattern"),
        ("C1 control char in user_id", _base(user_id="u\x85"), "user_id", "pattern"),
        ("user_id above int64", _base(user_id=2**63), "user_id", "less than or equal"),
        ("score at 2^50", {**cols, "scores": [[2.0**50] * 8, *rows[1:]]}, "scores", "below 2^50"),
        ("score past 2^50 rounding down in float32", {**cols, "scores": [[2.0**50 + 1] * 8, *rows[1:]]},
         "scores", "below 2^50"),
        ("hex at 2^50", {**hexr, "scores_hex": _hex_row(2.0**50) + hexr["scores_hex"][64:]}, "scores_hex", "2^50"),
        ("hex NaN", {**hexr, "scores_hex": _hex_row(float("nan")) + hexr["scores_hex"][64:]}, "scores_hex", "finite"),
        ("hex with spaces", {**hexr, "scores_hex": " " + hexr["scores_hex"][1:]}, "scores_hex", "hexadecimal"),
        ("deterministic string", _base(deterministic="yes"), "deterministic", "boolean"),
        ("negative seed", _base(seed=-1), "seed", "greater than or equal"),
        ("huge seed", _base(seed=2**70), "seed", "less than"),
        ("extra field", _base(colour="red"), "colour", "Extra inputs"),
        ("junk", "this is not json", "body", "Invalid JSON"),
        ("empty", "", "body", "Invalid JSON"),
        ("array", "[1, 2, 3]", "body", "object"),
        ("null", "null", "body", "object"),
        ("truncated", json.dumps(ok)[:-10], "body", "Invalid JSON"),
        ("deep nesting", "[" * 5000 + "]" * 5000, "body", ""),
    ]


@pytest.mark.parametrize("name,body,field,text", _bad_cases(), ids=[c[0] for c in _bad_cases()])
def test_validation_errors_name_the_field(
    client: TestClient, name: str, body: Any, field: str, text: str,
) -> None:
    detail = _post_raw(client, body if isinstance(body, str) else json.dumps(body))
    assert detail and all(d["loc"][0] == "body" for d in detail)
    assert any(field in map(str, d["loc"]) or field in d["msg"] for d in detail), detail
    assert any(text in d["msg"] for d in detail), detail


def test_batch_validation(client: TestClient) -> None:
    good = random_request(np.random.default_rng(1), 10, form="hex")
    bad = {**good, "group": "vip"}
    detail = _post_raw(client, json.dumps({"requests": [good, good, bad]}), "/v1/rank:batch")
    assert detail[0]["loc"][:4] == ["body", "requests", 2, "group"]
    assert "1 to" in _post_raw(client, json.dumps({"requests": []}), "/v1/rank:batch")[0]["msg"]
    _post_raw(client, json.dumps(good), "/v1/rank:batch")  # a single request is not a batch


def test_malformed_requests_never_500(client: TestClient) -> None:
    rng = random.Random(0)
    base = json.dumps(random_request(np.random.default_rng(2), 8, form="objects"))
    junk: list[bytes] = [b"\xff\xfe\x00", b"{", b'{"state": }', b"1e999", b'"x"', b"{}" * 3]
    for _ in range(150):
        s = bytearray(base.encode())
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(s))
            op = rng.random()
            if op < 0.4:
                s[i] = rng.randrange(256)
            elif op < 0.7:
                del s[i : i + rng.randint(1, 30)]
            else:
                s[i:i] = rng.choice([b"null", b"[", b"}", b'"', b"-", b"1e400", b",", b"NaN", b"true"])
        junk.append(bytes(s))
    for path in ("/v1/rank", "/v1/rank:batch"):
        for body in junk:
            r = client.post(path, content=body, headers={"content-type": "application/json"})
            assert r.status_code in (200, 422), (r.status_code, body[:200])


def test_health_ready_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["ready"] and ready["policy_version"] == "v1" and len(ready["sha256"]) == 64
    client.post("/v1/rank", content=b"junk", headers={"content-type": "application/json"})
    client.post("/v1/rank", content=b"junk")
    rank(client, random_request(np.random.default_rng(0), 10, form="hex"))
    text = client.get("/metrics")
    assert text.headers["content-type"].startswith("text/plain")
    body = text.text
    assert 'rlur_http_requests_total{endpoint="/v1/rank",method="POST",status="200"}' in body
    assert 'rlur_http_requests_total{endpoint="/v1/rank",method="POST",status="422"}' in body
    assert 'rlur_http_requests_total{endpoint="/v1/rank",method="POST",status="415"}' in body
    assert 'rlur_http_request_duration_seconds_bucket{endpoint="/v1/rank",le="+Inf"}' in body
    assert 'rlur_policy_info{version="v1",algo="demo"} 1' in body
    ranked = [ln for ln in body.splitlines() if ln.startswith("rlur_ranked_requests_total ")]
    assert int(ranked[0].split()[1]) >= 1
    # Unknown paths share one label (bounded cardinality) and are counted.
    client.get("/nope/123")
    assert 'endpoint="other",method="GET",status="404"' in client.get("/metrics").text


def test_openapi_documents_request_and_response(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert {"RankRequest", "RankBatchRequest", "Candidate", "RankResponse", "RankBatchResponse"} <= {*schemas}
    props = schemas["RankRequest"]["properties"]
    assert {"state", "group", "candidates", "candidate_ids", "scores", "scores_hex", "seed"} <= set(props)
    op = spec["paths"]["/v1/rank"]["post"]
    assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/RankRequest")
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/RankResponse")
    assert "422" in op["responses"]
    batch = spec["paths"]["/v1/rank:batch"]["post"]
    assert batch["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/RankBatchRequest")


def test_not_ready_without_a_checkpoint(tmp_path: Path) -> None:
    app = create_app(ServingConfig(checkpoint=tmp_path / "missing", request_log=False))
    with TestClient(app) as c:
        time.sleep(0.3)
        r = c.get("/readyz")
        assert r.status_code == 503 and "no checkpoint" in r.json()["error"]
        assert c.get("/healthz").status_code == 200
        assert c.post("/v1/rank", json=random_request(np.random.default_rng(0), 8)).status_code == 503


def test_reload_swaps_version_and_keeps_old_on_failure(tmp_path: Path) -> None:
    write_demo_checkpoint(tmp_path, seed=0, version="v1")
    log = tmp_path / "log.sqlite"
    app = create_app(ServingConfig(checkpoint=tmp_path, log_path=log, admin_token="s3cret"))
    body = random_request(np.random.default_rng(0), 20, form="hex", seed=1)
    with TestClient(app) as c:
        wait_until_ready(c)
        assert rank(c, body)["policy_version"] == "v1"
        write_demo_checkpoint(tmp_path, seed=1, version="v2")
        assert c.post("/admin/reload").status_code == 403
        assert c.post("/admin/reload", headers={"x-admin-token": "wrong"}).status_code == 403
        r = c.post("/admin/reload", headers={"x-admin-token": "s3cret"})
        assert r.status_code == 200
        assert r.json() == {"policy_version": "v2", "previous_version": "v1", "changed": True}
        assert rank(c, body)["policy_version"] == "v2"
        (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
        r = c.post("/admin/reload", headers={"x-admin-token": "s3cret"})
        assert r.status_code == 409 and "still serving v2" in r.json()["detail"]
        assert rank(c, body)["policy_version"] == "v2"
        assert "rlur_policy_reload_failures_total 1" in c.get("/metrics").text
    logged = read_request_log(log)
    assert [logged["versions"][i] for i in logged["version"].tolist()] == ["v1", "v2", "v2"]


def test_watch_reloads_and_hash_version(tmp_path: Path) -> None:
    write_demo_checkpoint(tmp_path, seed=0, version=None)
    app = create_app(ServingConfig(checkpoint=tmp_path, request_log=False, watch=True, watch_interval=0.05))
    with TestClient(app) as c:
        first = wait_until_ready(c)["policy_version"]
        assert first.startswith("sha256:")
        write_demo_checkpoint(tmp_path, seed=1, version="watched")
        deadline = time.monotonic() + 20
        while c.get("/readyz").json()["policy_version"] != "watched":
            assert time.monotonic() < deadline, "the watcher did not reload"
            time.sleep(0.05)


@pytest.mark.parametrize("suffix", [".sqlite", ".jsonl"])
def test_request_log_matches_responses(tmp_path: Path, suffix: str) -> None:
    write_demo_checkpoint(tmp_path, seed=0, version="v1")
    log = tmp_path / f"requests{suffix}"
    app = create_app(ServingConfig(checkpoint=tmp_path, log_path=log, log_candidates=suffix == ".jsonl"))
    rng = np.random.default_rng(0)
    sent, served = [], []
    with TestClient(app) as c:
        wait_until_ready(c)
        for i in range(5):
            body = random_request(rng, 10 + i, form="columnar", seed=i, user_id=f"u{i}" if i % 2 else i)
            sent.append(body)
            served.append(rank(c, body))
        reqs = [random_request(rng, 9, form="hex", request_id=f"client-{i}") for i in range(4)]
        sent += reqs
        served += rank(c, {"requests": reqs}, "/v1/rank:batch")["results"]
        c.post("/v1/rank", content=b"junk")  # not served, not logged
    log_ = read_request_log(log)  # the app has shut down: everything is flushed
    n = len(sent)
    assert log_["state"].shape == (n, OBS_DIM) and log_["action"].shape == (n, 8)
    assert log_["shown"].shape == log_["shown_pos"].shape == (n, SLATE_SIZE)
    assert log_["request_id"] == [r["request_id"] for r in served]
    assert log_["request_id"][-4:] == [f"client-{i}" for i in range(4)]
    assert log_["endpoint"] == ["/v1/rank"] * 5 + ["/v1/rank:batch"] * 4
    assert log_["user_id"][:5] == [0, "u1", 2, "u3", 4]
    assert log_["shown"].tolist() == [r["top_ids"] for r in served]
    for key, col in (("action", "action"), ("mu", "mu"), ("sigma", "sigma")):
        assert log_[col].tolist() == [r[key] for r in served]
    assert log_["log_prob"].tolist() == pytest.approx([r["log_prob"] for r in served])
    assert log_["state"].tolist() == [np.float32(b["state"]).tolist() for b in sent]
    assert log_["group"].tolist() == [GROUPS.index(b["group"]) for b in sent]
    assert log_["seed"][:5] == [0, 1, 2, 3, 4]
    assert log_["versions"] == ["v1"] and log_["version"].tolist() == [0] * n
    assert log_["timestamp"].dtype == torch.float64 and abs(log_["timestamp"][0].item() - time.time()) < 600
    pos = log_["shown_pos"].tolist()
    ids = [b.get("candidate_ids") or [c["id"] for c in b["candidates"]] for b in sent]
    assert [[ids[i][j] for j in pos[i]] for i in range(n)] == log_["shown"].tolist()
    if suffix == ".jsonl":
        assert log_["candidate_ids"] == ids
    else:
        assert log_["candidate_ids"] == [None] * n
