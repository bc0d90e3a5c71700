"""Schemathesis against the ranking API in process (ASGI): every built-in check, positive data
acceptance included, on every operation, with a bounded number of examples."""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

import rlur.serving.schemathesis_hooks  # noqa: F401  (registers the cross-field-rules hook)
from rlur.serving.app import ServingConfig, create_app
from rlur.serving.testing import wait_until_ready, write_demo_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# The schema is read when the tests are collected (schemathesis's lazy fixture loader needs pytest < 9),
# so the app and its checkpoint exist from import on; the fixture below starts and stops the app.
_DIR = Path(tempfile.mkdtemp(prefix="rlur-schemathesis-"))
write_demo_checkpoint(_DIR, seed=0, version="v1")
APP = create_app(ServingConfig(checkpoint=_DIR, log_path=_DIR / "requests.sqlite", max_candidates=200, max_batch=8))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def running_app() -> Iterator[None]:
    try:
        with TestClient(APP) as client:  # runs the lifespan: the policy loads, the request log opens
            wait_until_ready(client)
            yield
    finally:
        shutil.rmtree(_DIR, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_keeps_its_schema(case: schemathesis.Case) -> None:
    response = case.call_and_validate()
    STATUSES[case.operation.label][response.status_code] += 1


STATUSES: dict[str, Counter[int]] = {}


@pytest.fixture(scope="module", autouse=True)
def statuses() -> Iterator[None]:
    for op in schema.get_all_operations():
        STATUSES[op.ok().label] = Counter()
    yield
    print({label: dict(c) for label, c in STATUSES.items()})


def test_generated_requests_were_ranked() -> None:
    """The run above is no run of 422s: most schema-valid ranking requests were served."""
    for label in ("POST /v1/rank", "POST /v1/rank:batch"):
        assert STATUSES[label][200] >= 10, STATUSES
