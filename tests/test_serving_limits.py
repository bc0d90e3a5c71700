"""Bounded work and strict inputs of the ranking API: media type, body caps, the validation process,
duplicate request ids, and an OpenAPI schema that states the rules the server enforces."""

from __future__ import annotations

import json
import os
import re
import signal
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from rlur.serving.app import ServingConfig, create_app
from rlur.serving.bodies import BodyValidator, default_body_caps, largest_request_bytes, parse_size
from rlur.serving.commands import is_loopback
from rlur.serving.schemas import HEX_FLOAT, MAX_ABS_SCORE, hex_pattern
from rlur.serving.testing import random_request, wait_until_ready
from rlur.sim.env import OBS_DIM
from rlur.sim.world import GROUPS, SCORE_NAMES

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def client(ckpt: Path) -> Iterator[TestClient]:
    app = create_app(ServingConfig(checkpoint=ckpt, request_log=False, max_candidates=300, max_batch=50,
                                   thread_bytes=None, process_bytes=None))
    with TestClient(app) as c:
        wait_until_ready(c)
        yield c


def _body(n: int = 8, **extra: Any) -> bytes:
    return json.dumps(random_request(np.random.default_rng(0), n, form="hex", **extra)).encode()


@pytest.mark.parametrize("path", ["/v1/rank", "/v1/rank:batch"])
@pytest.mark.parametrize("content_type,status", [
    (None, 415), ("text/plain", 415), ("application/jsonp", 415), ("application/x-www-form-urlencoded", 415),
    ("application/json", 200), ("Application/JSON; charset=utf-8", 200),
])
def test_content_type_must_be_json(client: TestClient, path: str, content_type: str | None, status: int) -> None:
    body = _body() if path == "/v1/rank" else b'{"requests": [' + _body() + b"]}"
    headers = {} if content_type is None else {"content-type": content_type}
    r = client.post(path, content=body, headers=headers)
    assert r.status_code == status, r.text
    if status == 415:
        assert r.json() == {"detail": "Content-Type must be application/json"}


def test_body_cap_per_endpoint(ckpt: Path) -> None:
    app = create_app(ServingConfig(checkpoint=ckpt, request_log=False, max_body={"/v1/rank": 1000}))
    big = _body(50)
    with TestClient(app) as c:
        wait_until_ready(c)
        r = c.post("/v1/rank", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["detail"] == "request body larger than 1000 bytes, the cap of /v1/rank"
        # Without a Content-Length (chunked), the cap holds too.
        r = c.post("/v1/rank", content=iter([big[:600], big[600:]]), headers={"content-type": "application/json"})
        assert r.status_code == 413
        # The batch endpoint keeps its own cap.
        r = c.post("/v1/rank:batch", content=b'{"requests": [' + big + b"]}",
                   headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text


def _longest_valid_request(n: int) -> dict[str, Any]:
    """A valid request as long as compact JSON allows: every number 24 characters long."""
    longest = -1.2345678901234567e-123
    return {
        "state": [longest] * OBS_DIM, "group": max(GROUPS, key=len), "deterministic": False,
        "seed": 2**63 - 1, "user_id": "\U0001f600" * 256, "request_id": "\U0001f600" * 128,
        "candidates": [{"id": -(2**63) + i, "scores": dict.fromkeys(SCORE_NAMES, longest)} for i in range(n)],
    }


@pytest.mark.parametrize("max_candidates", [6, 300, 1000])
def test_rank_cap_is_sized_from_the_longest_valid_request(ckpt: Path, max_candidates: int) -> None:
    body = json.dumps(_longest_valid_request(max_candidates), separators=(",", ":")).encode()
    assert len(body) <= largest_request_bytes(max_candidates) <= default_body_caps(max_candidates)["/v1/rank"]
    assert largest_request_bytes(max_candidates) - len(body) < 64  # the bound is tight
    app = create_app(ServingConfig(checkpoint=ckpt, request_log=False, max_candidates=max_candidates))
    with TestClient(app) as c:
        wait_until_ready(c)
        r = c.post("/v1/rank", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text[:500]


def test_batch_cap_holds_a_full_batch_of_200_candidate_requests() -> None:
    one = len(json.dumps(random_request(np.random.default_rng(0), 200, form="objects")))
    assert 1024 * (one + 2) < default_body_caps(1000)["/v1/rank:batch"]


@pytest.mark.parametrize("text,expected", [("1048576", 2**20), ("512K", 2**19), ("64MiB", 2**26), ("1g", 2**30)])
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "0", "-5", "1.5M", "12 parsecs", "M"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


def test_duplicate_request_ids_in_a_batch(client: TestClient) -> None:
    reqs = [json.loads(_body(8, request_id=rid)) for rid in ("a", "b", "a")]
    r = client.post("/v1/rank:batch", json={"requests": reqs})
    assert r.status_code == 422
    assert "duplicate request_id 'a' (requests 0 and 2)" in r.json()["detail"][0]["msg"]
    reqs[2]["request_id"] = "c"
    reqs.append(json.loads(_body(8)))  # requests without an id get distinct server ids
    reqs.append(json.loads(_body(8)))
    ids = [x["request_id"] for x in client.post("/v1/rank:batch", json={"requests": reqs}).json()["results"]]
    assert ids[:3] == ["a", "b", "c"] and len(set(ids)) == 5


def test_one_id_type(client: TestClient) -> None:
    body = json.loads(_body(8, deterministic=True))
    body["candidate_ids"] = [1, "1", 2, 3, 4, 5, 6, 7]  # once 1 and "1" were two candidates
    assert client.post("/v1/rank", json=body).status_code == 422
    for dup in (1, 1.0):  # 1.0 is the integer 1 in JSON's data model, as in JSON Schema's
        body["candidate_ids"] = [1, dup, 2, 3, 4, 5, 6, 7]
        r = client.post("/v1/rank", content=json.dumps(body), headers={"content-type": "application/json"})
        assert r.status_code == 422 and "duplicate candidate id 1" in r.json()["detail"][0]["msg"]
    body["candidate_ids"] = [float(i) for i in range(8)]
    body["scores_hex"] = bytes(np.arange(64, dtype="<f4")[::-1].tobytes()).hex()  # id 0 scores highest
    r = client.post("/v1/rank", content=json.dumps(body), headers={"content-type": "application/json"})
    assert r.status_code == 200 and r.json()["top_ids"] == [0, 1, 2, 3, 4, 5]  # read as the integers


def _spec(client: TestClient) -> dict[str, Any]:
    return client.get("/openapi.json").json()


def test_schema_states_the_request_rules(client: TestClient) -> None:
    schemas = _spec(client)["components"]["schemas"]
    req = schemas["RankRequest"]
    props = req["properties"]
    assert len(req["oneOf"]) == 3 and req["additionalProperties"] is False
    for form in ("candidates", "candidate_ids", "scores", "scores_hex"):
        assert "null" not in json.dumps(props[form]) and "default" not in props[form]
    for name in ("candidates", "candidate_ids", "scores"):
        assert (props[name]["minItems"], props[name]["maxItems"]) == (6, 300)  # the server's --max-candidates
    assert props["candidate_ids"]["uniqueItems"] is True
    assert props["candidate_ids"]["items"] == {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}
    assert props["scores_hex"]["pattern"] == hex_pattern(300)
    row = props["scores"]["items"]
    assert row["items"] == {"type": "number", "exclusiveMinimum": -MAX_ABS_SCORE, "exclusiveMaximum": MAX_ABS_SCORE}
    assert props["state"]["items"] == {"type": "number", "minimum": -1e6, "maximum": 1e6}
    assert "pattern" in json.dumps(props["request_id"]) and "pattern" in json.dumps(props["user_id"])
    assert schemas["RankBatchRequest"]["properties"]["requests"]["maxItems"] == 50  # --max-batch
    assert schemas["Candidate"]["properties"]["id"]["maximum"] == 2**63 - 1


def test_schema_states_the_responses(client: TestClient) -> None:
    paths = _spec(client)["paths"]
    ready = paths["/readyz"]["get"]["responses"]
    assert ready["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/ReadyResponse")
    assert ready["503"]["content"]["application/json"]["schema"]["$ref"].endswith("/NotReadyResponse")
    metrics = paths["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain; version=0.0.4; charset=utf-8"]
    assert client.get("/metrics").headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    for path in ("/v1/rank", "/v1/rank:batch"):
        assert {"200", "413", "415", "422", "503"} <= set(paths[path]["post"]["responses"])
    assert "security" not in paths["/admin/reload"]["post"]  # no token configured: the schema says so


def test_schema_states_the_admin_token(ckpt: Path) -> None:
    app = create_app(ServingConfig(checkpoint=ckpt, request_log=False, admin_token="t"))
    spec = TestClient(app).get("/openapi.json").json()
    assert spec["paths"]["/admin/reload"]["post"]["security"] == [{"AdminToken": []}]
    assert spec["components"]["securitySchemes"]["AdminToken"]["name"] == "X-Admin-Token"


@given(st.integers(0, 2**32 - 1))
def test_hex_pattern_is_the_score_bound(bits: int) -> None:
    value = np.array([bits], dtype=np.uint32).view(np.float32)[0]
    with np.errstate(invalid="ignore"):
        allowed = bool(abs(value) < MAX_ABS_SCORE)
    text = np.array([bits], dtype="<u4").tobytes().hex()
    assert bool(re.fullmatch(HEX_FLOAT, text)) == allowed == bool(re.fullmatch(HEX_FLOAT, text.upper()))


def test_validation_thread_and_process_give_the_inline_answers(ckpt: Path) -> None:
    rng = np.random.default_rng(5)
    valid = [json.dumps({"requests": [random_request(rng, 40, form=f, seed=i) for i, f in
                                      enumerate(("objects", "columnar", "hex"))]}).encode()]
    invalid = [b"{", json.dumps({"requests": [random_request(rng, 8, group="vip")]}).encode()]
    answers = []
    tiers = ((None, None), (0, None), (None, 0))  # inline, then every body in a thread, then in the process
    for thread_bytes, process_bytes in tiers:
        app = create_app(ServingConfig(checkpoint=ckpt, request_log=False, thread_bytes=thread_bytes,
                                       process_bytes=process_bytes))
        with TestClient(app) as c:
            wait_until_ready(c)
            rs = [c.post("/v1/rank:batch", content=b, headers={"content-type": "application/json"})
                  for b in valid + invalid]
            answers.append([(r.status_code, [{k: v for k, v in x.items() if k != "request_id"}
                                             for x in r.json()["results"]] if r.status_code == 200 else r.json())
                            for r in rs])
    assert [a[0] for a in answers[0]] == [200, 422, 422]
    assert answers[0] == answers[1] == answers[2]


def test_a_dead_validation_process_is_replaced() -> None:
    import asyncio

    validator = BodyValidator({"max_candidates": 1000, "max_batch": 1024}, process_bytes=0)
    body = _body(8)

    async def run() -> None:
        inputs, _ = await validator.validate(body, batch=False)
        assert inputs is not None and len(inputs[0].ids) == 8
        pool = validator._pool
        assert pool is not None
        for pid in list(pool._processes):  # what an out-of-memory kill does
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(RuntimeError, match="validation process died"):
            await validator.validate(body, batch=False)
        inputs, _ = await validator.validate(body, batch=False)  # a new process
        assert inputs is not None

    try:
        asyncio.run(run())
    finally:
        validator.close()


@pytest.mark.parametrize("host,loopback", [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("example.org", False),
])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
