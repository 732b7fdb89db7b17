"""Forecasting over gRPC: a real server (in one process and behind front processes) serving a
real forecast model, a real client; loads, rollbacks and refusals under concurrent calls."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator
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

from engine.forecast import ForecastModel
from tests.forecast.conftest import HORIZON
from tests.grpc_harness import RunningServer, rpc_error, simple_order


@pytest.fixture
def forecast_server(models_dir: Path) -> Iterator[Callable[..., RunningServer]]:
    started: list[RunningServer] = []

    def start(**settings) -> RunningServer:
        srv = RunningServer(models_dir, **settings).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


def _stub(srv: RunningServer) -> pb_grpc.ForecastingStub:
    return pb_grpc.ForecastingStub(srv.channel)


def _health(srv: RunningServer, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(srv.channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service)).status


@pytest.mark.parametrize("single_process", [True, False], ids=["one_process", "fronts"])
def test_forecast_answers_the_models_quantiles(
    forecast_server, model_dir: Path, model: ForecastModel, single_process: bool
) -> None:
    srv = forecast_server(forecast_models=str(model_dir), single_process=single_process)
    ids = [str(s) for s in model.series_ids[:5]]
    reply = _stub(srv).Forecast(pb.ForecastRequest(series_ids=ids, horizon=7))
    want = model.forecast(ids, 7)
    assert reply.model_version == model.version
    assert list(reply.quantiles) == list(model.quantiles)
    assert [s.series_id for s in reply.series] == ids
    got = np.array([[list(p.values) for p in s.periods] for s in reply.series])
    np.testing.assert_allclose(got, want.values, rtol=1e-12)
    assert (np.diff(got, axis=2) >= 0).all()  # quantiles never cross
    starts = np.array([[p.period_start.seconds for p in s.periods] for s in reply.series])
    np.testing.assert_array_equal(starts, want.dates.astype("datetime64[s]").astype(np.int64))
    # horizon 0: the model's own.
    full = _stub(srv).Forecast(pb.ForecastRequest(series_ids=ids[:1]))
    assert len(full.series[0].periods) == model.horizon == HORIZON
    assert _health(srv, "ordersight.forecast") == health_pb2.HealthCheckResponse.SERVING
    assert _health(srv, "ordersight.v1.Forecasting") == health_pb2.HealthCheckResponse.SERVING
    db = ProtoReflectionDescriptorDatabase(srv.channel)  # grpcurl sees it
    assert "ordersight.v1.Forecasting" in set(db.get_services())


def test_bad_requests_are_named(forecast_server, model_dir: Path, model: ForecastModel) -> None:
    stub = _stub(forecast_server(forecast_models=str(model_dir), single_process=True))
    known = str(model.series_ids[0])
    cases = [
        (pb.ForecastRequest(series_ids=[known, "no-such-series"], horizon=3),
         grpc.StatusCode.NOT_FOUND, "no-such-series"),
        (pb.ForecastRequest(series_ids=[known], horizon=HORIZON + 1),
         grpc.StatusCode.INVALID_ARGUMENT, "horizon"),
        (pb.ForecastRequest(horizon=3), grpc.StatusCode.INVALID_ARGUMENT, "series_ids"),
        (pb.ForecastRequest(series_ids=[known] * 10_001, horizon=1),
         grpc.StatusCode.INVALID_ARGUMENT, "at most 10000"),
    ]  # fmt: skip
    for request, code, words in cases:
        err = rpc_error(lambda r=request: stub.Forecast(r))
        assert err.code() == code and words in err.details(), (err.code(), err.details())


def test_without_a_model_forecasting_is_not_serving_and_risk_scoring_is(
    forecast_server, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    srv = forecast_server(forecast_models=str(broken), single_process=True)
    err = rpc_error(lambda: _stub(srv).Forecast(pb.ForecastRequest(series_ids=["a"])))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "manifest.json" in err.details()
    assert _health(srv, "ordersight.forecast") == health_pb2.HealthCheckResponse.NOT_SERVING
    assert _health(srv, "ordersight.v1.Forecasting") == health_pb2.HealthCheckResponse.NOT_SERVING
    assert _health(srv, "ordersight.v1.OrderRisk") == health_pb2.HealthCheckResponse.SERVING


def test_load_and_rollback_under_concurrent_forecasts(
    forecast_server, model_dir: Path, model: ForecastModel, tmp_path: Path
) -> None:
    """Every Forecast call during loads and rollbacks succeeds, each answered whole by one
    version; a broken folder is refused with the reason and the serving model stays."""
    registry = tmp_path / "registry"
    registry.mkdir()
    shutil.copytree(model_dir, registry / "v1")
    shutil.copytree(model_dir, registry / "v2")
    # v2 is the same boosters with another version name: its answers equal v1's.
    manifest = (registry / "v2" / "manifest.json").read_text()
    manifest = manifest.replace(f'"version": "{model.version}"', '"version": "v2-test"')
    (registry / "v2" / "manifest.json").write_text(manifest)
    broken = registry / "broken"
    shutil.copytree(model_dir, broken)
    onnx = next(broken.glob("*.onnx"))
    onnx.write_bytes(onnx.read_bytes()[:100])
    srv = forecast_server(
        forecast_models=str(registry / "v1"), forecast_registry=str(registry), workers=2
    )
    stub = _stub(srv)
    ids = [str(s) for s in model.series_ids[:3]]
    want = model.forecast(ids, 5).values
    stop = threading.Event()
    failures: list[BaseException] = []
    versions: set[str] = set()

    def hammer() -> None:
        while not stop.is_set():
            try:
                r = stub.Forecast(pb.ForecastRequest(series_ids=ids, horizon=5), timeout=30)
                got = np.array([[list(p.values) for p in s.periods] for s in r.series])
                np.testing.assert_allclose(got, want, rtol=1e-12)
                versions.add(r.model_version)
            except BaseException as exc:  # collected and raised in the test's thread
                failures.append(exc)
                return

    def score() -> None:  # risk scoring goes on beside the forecasts and the swaps
        i = 0
        while not stop.is_set():
            try:
                srv.stub.Score(simple_order(f"o-{i}"), timeout=30)
            except BaseException as exc:
                failures.append(exc)
                return
            i += 1

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    threads.append(threading.Thread(target=score))
    for t in threads:
        t.start()
    try:
        st = stub.LoadForecastModel(pb.LoadModelRequest(version="v2"))
        assert st.version == "v2-test" and st.previous == model.version and st.swaps == 1
        err = rpc_error(lambda: stub.LoadForecastModel(pb.LoadModelRequest(version="broken")))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "checksum" in err.details() or "cannot open" in err.details(), err.details()
        assert stub.GetForecastModel(pb.GetForecastModelRequest()).version == "v2-test"
        err = rpc_error(lambda: stub.LoadForecastModel(pb.LoadModelRequest(version="v9")))
        assert err.code() == grpc.StatusCode.NOT_FOUND
        back = stub.RollbackForecastModel(pb.RollbackRequest())
        assert back.version == model.version and back.previous == "v2-test"
        st = stub.LoadForecastModel(pb.LoadModelRequest(path=str(registry / "v2")))
        assert st.version == "v2-test"
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures, failures[0]
    assert versions == {model.version, "v2-test"}
    status = stub.GetForecastModel(pb.GetForecastModelRequest())
    assert status.horizon == HORIZON and status.series == len(model.series_ids)
    assert list(status.quantiles) == list(model.quantiles) and status.freq == model.freq


def test_roles(forecast_server, model_dir: Path, model: ForecastModel) -> None:
    """Forecast needs the forecast role; loading a model needs admin."""
    from engine.serving.auth import hash_token

    tokens = [
        {"name": "planner", "sha256": hash_token("planner-secret"), "roles": ["forecast"]},
        {"name": "checkout", "sha256": hash_token("checkout-secret"), "roles": ["score"]},
    ]
    srv = forecast_server(forecast_models=str(model_dir), single_process=True, tokens=tokens)
    stub = _stub(srv)
    req = pb.ForecastRequest(series_ids=[str(model.series_ids[0])], horizon=2)

    def auth(secret: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {secret}")]

    assert stub.Forecast(req, metadata=auth("planner-secret")).series
    err = rpc_error(lambda: stub.Forecast(req, metadata=auth("checkout-secret")))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = rpc_error(
        lambda: stub.LoadForecastModel(
            pb.LoadModelRequest(path=str(model_dir)), metadata=auth("planner-secret")
        )
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED


def test_query_command_prints_the_served_quantiles(
    forecast_server, model_dir: Path, model: ForecastModel, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.cli import main

    srv = forecast_server(forecast_models=str(model_dir), single_process=True)
    ids = [str(s) for s in model.series_ids[:2]]
    args = ["forecast", "query", "--addr", f"127.0.0.1:{srv.port}", "--series", ",".join(ids)]
    assert main([*args, "--horizon", "3", "--token", ""]) == 0
    out, err = capsys.readouterr()
    rows = [line.split(",") for line in out.strip().splitlines()]
    assert rows[0] == ["series_id", "date", *(f"q{q:g}" for q in model.quantiles)]
    want = model.forecast(ids, 3).values.reshape(-1, len(model.quantiles))
    got = np.array([[float(v) for v in r[2:]] for r in rows[1:]])
    np.testing.assert_allclose(got, want, rtol=1e-3)
    assert [r[0] for r in rows[1:]] == [i for i in ids for _ in range(3)]
    assert f"model {model.version}" in err
    assert main([*args[:-2], "--series", "nope", "--token", ""]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err
