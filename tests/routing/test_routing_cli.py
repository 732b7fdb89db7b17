"""`ordersight route agent | agent-state | agents | case | complete | assign | show` against a
real server with a store and a routing text model: the README's walk-through, as a test."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.routing.cli import main
from tests.grpc_harness import RunningServer


@pytest.fixture
def addr(tmp_path: Path, routing_models: Path, start_server: Callable[..., RunningServer]) -> str:
    srv = start_server(
        single_process=True, store=str(tmp_path / "store.db"), routing_models=str(routing_models)
    )
    return f"127.0.0.1:{srv.port}"


def _route(capsys: pytest.CaptureFixture[str], addr: str, *args: str) -> tuple[int, str, str]:
    code = main(["route", *args, "--addr", addr])
    out, err = capsys.readouterr()
    return code, out, err


def _shift_around_now(before_min: int, after_min: int) -> str:
    now = int(time.time() // 60 % 1440)
    a, b = (now - before_min) % 1440, (now + after_min) % 1440
    return f"{a // 60:02d}:{a % 60:02d}-{b // 60:02d}:{b % 60:02d}"


def test_a_complex_order_from_the_command_line(addr: str, capsys) -> None:
    code, out, _ = _route(
        capsys, addr, "agent", "ana", "--skills", "hardware_config:5,installation:3",
        "--languages", "en,de", "--capacity", "2", "--shift", _shift_around_now(60, 120),
        "--days", "every", "--team", "complex",
    )  # fmt: skip
    assert code == 0 and "ana" in out and "hardware_config:5" in out
    assert (
        _route(capsys, addr, "agent", "ben", "--skills", "payment_terms:4", "--capacity", "2")[0]
        == 0
    )
    code, out, _ = _route(
        capsys, addr, "case", "CASE-1", "--subject", "Custom configuration for order SO-448812",
        "--body", "we need the servers configured with RAID 10 before they ship, 256 GB each",
        "--language", "en", "--amount", "86000", "--currency", "EUR", "--tier", "key",
        "--payment-terms", "net90", "--line", "SRV-7781-R:server:6:bto", "--json",
    )  # fmt: skip
    assert code == 0
    got = json.loads(out)
    assert got["category"] == "hardware_config" and got["status"] == "assigned"
    assert got["agent_id"] == "ana" and any("level 5" in r for r in got["reasons"])
    code, out, _ = _route(capsys, addr, "complete", "CASE-1", "--handle-s", "2400")
    assert code == 0 and "completed" in out
    code, out, _ = _route(capsys, addr, "agents")
    assert "hardware_config: 1 cases, median 40 min" in out
    # Off shift, nobody takes a case: it waits in its queue, saying why.
    _route(capsys, addr, "agent", "ana", "--skills", "hardware_config:5",
           "--shift", _shift_around_now(-120, 240))  # fmt: skip
    code, out, _ = _route(capsys, addr, "case", "CASE-2", "--category", "hardware_config")
    assert code == 0 and "queued to queue hardware_config" in out and "on shift" in out
    code, out, _ = _route(capsys, addr, "show", "CASE-1")
    assert code == 0 and "CASE-1" in out
    code, out, _ = _route(capsys, addr, "assign")
    assert code == 0 and "still queued" in out


def test_errors_name_the_field(addr: str, capsys) -> None:
    code, _, err = _route(
        capsys, addr, "case", "X", "--category", "payment_terms", "--language", "EN"
    )
    assert code == 1 and "INVALID_ARGUMENT: case.language" in err
    code, _, err = _route(capsys, addr, "agent-state", "ghost", "--state", "away")
    assert code == 1 and "NOT_FOUND: agent_id" in err
    with pytest.raises(SystemExit) as exc:
        main(["route", "agent", "x", "--skills", "hardware_config", "--addr", addr])
    assert exc.value.code == 2
    assert "--skills: SKILL:LEVEL" in capsys.readouterr().err
