"""Credentials and roles, over a real server in both layouts (the fronts check every call,
and so does a process that takes calls itself), with real clients."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from ordersight.v1 import risk_pb2 as pb
from ordersight.v1 import risk_pb2_grpc as pb_grpc

from engine.cli import main
from engine.config import load_settings
from engine.serving.auth import hash_token, new_token, parse_tokens
from engine.serving.server import Server
from tests.grpc_harness import TIMEOUT_S, RunningServer, rpc_error, simple_order

SECRETS = {role: new_token() for role in ("score", "report", "admin")}
TOKENS = [
    {"name": f"{r}-client", "sha256": hash_token(t), "roles": [r]} for r, t in SECRETS.items()
]


def _as(role: str | None, secret: str | None = None) -> tuple[tuple[str, str], ...]:
    token = secret if secret is not None else SECRETS[role] if role else None
    return () if token is None else (("authorization", f"Bearer {token}"),)


@pytest.fixture(params=["fronts", "one_process"])
def guarded(
    request: pytest.FixtureRequest, start_server: Callable[..., RunningServer]
) -> RunningServer:
    return start_server(tokens=TOKENS, single_process=request.param == "one_process")


def test_each_method_needs_a_token_with_its_role(guarded: RunningServer) -> None:
    stub, admin = guarded.stub, pb_grpc.ModelAdminStub(guarded.channel)
    outcome = pb.ReportOutcomesRequest(outcomes=[pb.Outcome(order=simple_order(), is_fraud=True)])
    calls = {
        "score": lambda md: stub.Score(simple_order(), timeout=TIMEOUT_S, metadata=md),
        "report": lambda md: stub.ReportOutcomes(outcome, timeout=TIMEOUT_S, metadata=md),
        "admin": lambda md: admin.GetStatus(
            pb.GetModelStatusRequest(), timeout=TIMEOUT_S, metadata=md
        ),
    }
    for role, call in calls.items():
        for md in (_as(None), _as(None, "not-a-token"), (("authorization", "Basic x"),)):
            err = rpc_error(lambda md=md, call=call: call(md))
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED, (role, md, err.details())
        for other in SECRETS:
            if other != role:
                err = rpc_error(lambda other=other, call=call: call(_as(other)))
                assert err.code() == grpc.StatusCode.PERMISSION_DENIED
                assert f"lacks the role '{role}'" in (err.details() or "")
        call(_as(role))  # the right role goes through
    stream = stub.WatchAlerts(pb.WatchAlertsRequest(), timeout=TIMEOUT_S, metadata=_as("score"))
    assert rpc_error(lambda: next(iter(stream))).code() == grpc.StatusCode.PERMISSION_DENIED


def test_every_method_without_a_token_is_unauthenticated(guarded: RunningServer) -> None:
    """Every method of every service, read from their descriptors, before its request is
    even parsed."""
    names = [
        (f"/{s.full_name}/{m.name}", m.server_streaming)
        for s in pb.DESCRIPTOR.services_by_name.values()
        for m in s.methods
    ]
    assert len(names) == 26  # 6 OrderRisk, 6 ModelAdmin, 4 Forecasting, 3 Reviews, 7 Routing
    for method, streaming in names:
        if streaming:
            call = guarded.channel.unary_stream(method)
            err = rpc_error(lambda call=call: next(iter(call(b"", timeout=TIMEOUT_S))))
        else:
            call = guarded.channel.unary_unary(method)
            err = rpc_error(lambda call=call: call(b"", timeout=TIMEOUT_S))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED, method


def test_a_refused_report_changes_no_state(start_server: Callable[..., RunningServer]) -> None:
    """The poisoning the issue found: twenty fraud outcomes for a victim, sent without a
    token, are refused and leave the victim's next decision as it would have been."""
    attacked, control = start_server(tokens=TOKENS), start_server(tokens=TOKENS)
    victim, later = simple_order("v-1"), simple_order("v-2")
    outcome = pb.ReportOutcomesRequest(outcomes=[pb.Outcome(order=victim, is_fraud=True)] * 20)
    got = []
    for srv in (attacked, control):
        srv.stub.Score(victim, timeout=TIMEOUT_S, metadata=_as("score"))
        if srv is attacked:
            err = rpc_error(lambda srv=srv: srv.stub.ReportOutcomes(outcome, timeout=TIMEOUT_S))
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        got.append(srv.stub.Score(later, timeout=TIMEOUT_S, metadata=_as("score")))
    assert got[0].score == got[1].score and got[0].action == got[1].action
    assert attacked.server is not None and control.server is not None
    assert np.array_equal(attacked.server.engine.state.words, control.server.engine.state.words)
    # the same outcomes with the report role do reach the state
    control.stub.ReportOutcomes(outcome, timeout=TIMEOUT_S, metadata=_as("report"))
    assert not np.array_equal(attacked.server.engine.state.words, control.server.engine.state.words)


def test_health_and_reflection_need_no_token(guarded: RunningServer) -> None:
    health = health_pb2_grpc.HealthStub(guarded.channel)
    status = health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S).status
    assert status == health_pb2.HealthCheckResponse.SERVING
    services = ProtoReflectionDescriptorDatabase(guarded.channel).get_services()
    assert "ordersight.v1.OrderRisk" in services


def test_the_cli_sends_its_token(
    start_server: Callable[..., RunningServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    srv = start_server(tokens=TOKENS)
    f = tmp_path / "o.json"
    order = {"orderId": "cli-1", "customerId": "c-1", "createdAt": "2026-02-01T12:00:00Z",
             "amountMinor": "1999", "currency": "USD"}  # fmt: skip
    f.write_text(json.dumps(order))
    addr = ["--addr", f"127.0.0.1:{srv.port}"]
    assert main(["score", *addr, str(f)]) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err
    assert main(["score", *addr, "--token", SECRETS["score"], str(f)]) == 0
    assert '"orderId": "cli-1"' in capsys.readouterr().out
    assert main(["models", "status", *addr, "--token", SECRETS["score"]]) == 1
    assert "PERMISSION_DENIED" in capsys.readouterr().err


def test_the_token_command_writes_what_the_engine_reads(tmp_path: Path) -> None:
    assert (
        main(["token", "--name", "local", "--roles", "score,admin", "--write", str(tmp_path)]) == 0
    )
    secret = (tmp_path / "token").read_text().strip()
    assert (tmp_path / "token").stat().st_mode & 0o077 == 0
    settings = load_settings(tmp_path / "config.toml", env={})
    (token,) = parse_tokens(settings.tokens)
    assert token.digest.hex() == hash_token(secret) and token.roles == {"score", "admin"}


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"name": "x", "sha256": "00", "roles": ["score"]}, "tokens[0].sha256"),
        ({"name": "x", "sha256": "0" * 64, "roles": ["root"]}, "tokens[0].roles"),
        ({"sha256": "0" * 64, "roles": ["score"]}, "tokens[0].name"),
        ({"name": "x", "sha256": "0" * 64, "roles": ["score"], "secret": "s"}, "unknown key"),
    ],
)
def test_a_bad_token_entry_stops_start_up_naming_it(
    models_dir: Path, entry: dict[str, object], words: str
) -> None:
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
        Server(load_settings(env={}, models=str(models_dir), tokens=[entry]))
