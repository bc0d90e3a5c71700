"""``rlur simulate`` end to end in a subprocess, and its bad-input errors."""

import json
from pathlib import Path

import pytest


def test_simulate_writes_the_documented_json(tmp_path: Path, rlur_cli):
    out = tmp_path / "sim.json"
    proc = rlur_cli("simulate", "--policy", "uniform", "--users", "256", "--days", "3", "--seed", "1",
                    "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    for key in ("avg_return_day", "day1_retention", "return_day_hist", "behaviour_rates", "session_depth",
                "requests", "requests_per_s", "world_config"):
        assert key in result, key
    assert set(result["behaviour_rates"]) >= {"click", "long_view", "like", "follow", "comment", "forward", "hate"}
    assert sum(result["return_day_hist"].values()) == pytest.approx(1.0)
    assert result["requests"] > 0 and result["requests_per_s"] > 0
    assert "average return day" in proc.stdout  # the readable table


def test_simulate_is_deterministic(tmp_path: Path, rlur_cli):
    outs = [tmp_path / "a.json", tmp_path / "b.json"]
    for out in outs:
        assert rlur_cli("simulate", "--policy", "random", "--users", "64", "--days", "2", "--seed", "5",
                    "--world-seed", "2", "--out", str(out)).returncode == 0
    a, b = (json.loads(p.read_text()) for p in outs)
    for key in ("avg_return_day", "day1_retention", "return_day_hist", "behaviour_rates", "requests"):
        assert a[key] == b[key]


@pytest.mark.parametrize("args, message", [
    (["--policy", "best"], "invalid choice"),
    (["--users", "-4"], "positive integer"),
    (["--days", "0"], "positive integer"),
    (["--users", "ten"], "positive integer"),
    (["--out", "/proc/rlur/sim.json"], "cannot write"),
    (["--world", "/nonexistent/world"], "no learned world"),
])
def test_bad_input_is_one_line(args, message, rlur_cli):
    proc = rlur_cli("simulate", "--users", "8", "--days", "1", *args)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
