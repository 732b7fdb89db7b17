"""ModelAdmin over a real server with front processes and real clients: versions listed,
loaded, rolled back and swapped back and forth under Score load; broken versions refused
while the champion goes on serving."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pytest
from ordersight.v1 import risk_pb2 as pb
from ordersight.v1 import risk_pb2_grpc as pb_grpc

from engine.cli import main
from engine.decision_log import segments
from engine.serving.bulk import BATCH_CHUNK
from tests.fuzzing import ChildServer
from tests.grpc_harness import TIMEOUT_S, RunningServer, orders_of, rpc_error, simple_order

SWAPS = 20
CLIENTS = 4


def _copy(src: Path, dst: Path, edit: Any = None) -> Path:
    shutil.copytree(src, dst)
    if edit is not None:
        manifest = json.loads((dst / "manifest.json").read_text())
        edit(manifest)
        (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


@pytest.fixture(scope="module")
def model_registry(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """a: the trained models; b: the same files as another version; broken: a tier two that
    fails its checksum; other-schema: a manifest for features this engine does not compute."""
    root = tmp_path_factory.mktemp("registry")
    _copy(models_dir, root / "a")
    _copy(models_dir, root / "b", lambda m: m.update(version=m["version"] + "-b"))
    broken = _copy(models_dir, root / "broken", lambda m: m.update(version="broken"))
    onnx = broken / "tier2.onnx"
    onnx.write_bytes(onnx.read_bytes()[:1000])
    _copy(
        models_dir,
        root / "other-schema",
        lambda m: m.update(version="other", feature_names=[*m["feature_names"], "extra"]),
    )
    _copy(models_dir, root / "bad-metrics", lambda m: m.update(version="bm", metrics=[1]))
    return root


@pytest.fixture
def admin_server(model_registry: Path) -> Iterator[RunningServer]:
    srv = RunningServer(model_registry / "a", registry=str(model_registry)).start()
    try:
        yield srv
    finally:
        srv.stop()


def _admin(srv: RunningServer) -> pb_grpc.ModelAdminStub:
    return pb_grpc.ModelAdminStub(srv.channel)


def _version(root: Path, name: str) -> str:
    return str(json.loads((root / name / "manifest.json").read_text())["version"])


def test_list_and_status_name_the_champion(
    admin_server: RunningServer, model_registry: Path
) -> None:
    admin = _admin(admin_server)
    listed = admin.ListModels(pb.ListModelsRequest(), timeout=TIMEOUT_S)
    by_folder = {Path(m.path).name: m for m in listed.models}
    assert set(by_folder) == {"a", "b", "broken", "other-schema", "bad-metrics"}
    assert by_folder["bad-metrics"].problem  # listed with what is wrong, the others still read
    assert [n for n, m in by_folder.items() if m.champion] == ["a"]
    assert by_folder["a"].tier2_auc > 0.5 and by_folder["a"].created_at.seconds > 0
    assert "feature schema" in by_folder["other-schema"].problem
    status = admin.GetStatus(pb.GetModelStatusRequest(), timeout=TIMEOUT_S)
    assert status.champion == _version(model_registry, "a")
    assert status.previous == "" and status.swaps == 0 and not status.problems
    assert status.state_bytes > 0 and status.parity_max_error < 1e-5


def test_load_then_rollback(admin_server: RunningServer, model_registry: Path) -> None:
    admin, stub = _admin(admin_server), admin_server.stub
    va, vb = _version(model_registry, "a"), _version(model_registry, "b")
    status = admin.LoadModel(pb.LoadModelRequest(version="b"), timeout=TIMEOUT_S)
    assert (status.champion, status.previous, status.swaps) == (vb, va, 1)
    assert stub.Score(simple_order("after-load"), timeout=TIMEOUT_S).model_version == vb
    status = admin.Rollback(pb.RollbackRequest(), timeout=TIMEOUT_S)
    assert (status.champion, status.previous, status.swaps) == (va, vb, 2)
    assert stub.Score(simple_order("after-rollback"), timeout=TIMEOUT_S).model_version == va
    by_path = admin.LoadModel(
        pb.LoadModelRequest(path=str(model_registry / "b")), timeout=TIMEOUT_S
    )
    assert by_path.champion == vb and by_path.champion_path == str(model_registry / "b")
    assert by_path.state_orders >= 2  # the state carried over every swap


@pytest.mark.parametrize(
    ("request_", "code", "words"),
    [
        (pb.LoadModelRequest(version="broken"), grpc.StatusCode.FAILED_PRECONDITION, "checksum"),
        (
            pb.LoadModelRequest(version="other-schema"),
            grpc.StatusCode.FAILED_PRECONDITION,
            "feature schema",
        ),
        (pb.LoadModelRequest(version="nope"), grpc.StatusCode.NOT_FOUND, "no model version"),
        (pb.LoadModelRequest(path="/no/such/folder"), grpc.StatusCode.NOT_FOUND, "no such"),
        (pb.LoadModelRequest(), grpc.StatusCode.INVALID_ARGUMENT, "target"),
        (pb.LoadModelRequest(version=""), grpc.StatusCode.INVALID_ARGUMENT, "version"),
    ],
)
def test_a_load_that_cannot_serve_is_refused_and_the_champion_stays(
    admin_server: RunningServer,
    model_registry: Path,
    request_: pb.LoadModelRequest,
    code: grpc.StatusCode,
    words: str,
) -> None:
    admin = _admin(admin_server)
    err = rpc_error(lambda: admin.LoadModel(request_, timeout=TIMEOUT_S))
    assert err.code() == code and words in (err.details() or ""), err.details()
    status = admin.GetStatus(pb.GetModelStatusRequest(), timeout=TIMEOUT_S)
    assert status.champion == _version(model_registry, "a") and status.swaps == 0
    d = admin_server.stub.Score(simple_order("still-served"), timeout=TIMEOUT_S)
    assert d.model_version == _version(model_registry, "a")


def test_rollback_without_a_previous_version_is_refused(admin_server: RunningServer) -> None:
    err = rpc_error(lambda: _admin(admin_server).Rollback(pb.RollbackRequest(), timeout=TIMEOUT_S))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_swaps_back_and_forth_under_load_fail_no_call_and_mix_no_batch(
    admin_server: RunningServer, model_registry: Path
) -> None:
    """20 swaps between a and b, and a broken load among them, while clients score without
    pause on their own connections: every call answers, with one of the two versions. (A
    micro-batch is one Decisions, of one version, by construction; the ScoreBatch test below
    catches a call whose chunks would be decided by two.)"""
    srv = admin_server
    assert srv.server is not None
    va, vb = _version(model_registry, "a"), _version(model_registry, "b")
    stop = threading.Event()
    seen: list[list[str]] = [[] for _ in range(CLIENTS)]
    failures: list[BaseException] = []

    def client(k: int) -> None:
        channel = grpc.insecure_channel(
            f"127.0.0.1:{srv.port}", [("grpc.use_local_subchannel_pool", 1)]
        )
        stub = pb_grpc.OrderRiskStub(channel)
        i = 0
        try:
            while not stop.is_set():
                d = stub.Score(simple_order(f"c{k}-{i}"), timeout=TIMEOUT_S)
                seen[k].append(d.model_version)
                i += 1
        except BaseException as exc:  # reported below
            failures.append(exc)
        finally:
            channel.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    admin = _admin(srv)
    refused = 0
    try:
        for i in range(SWAPS):
            if i == SWAPS // 2:
                refused += (
                    rpc_error(
                        lambda: admin.LoadModel(pb.LoadModelRequest(version="broken"), timeout=60)
                    ).code()
                    == grpc.StatusCode.FAILED_PRECONDITION
                )
            target = "b" if i % 2 == 0 else "a"
            status = admin.LoadModel(pb.LoadModelRequest(version=target), timeout=60)
            assert status.champion == (vb if target == "b" else va)
    finally:
        stop.set()
        for t in threads:
            t.join(TIMEOUT_S)
    assert not failures, failures[:3]
    assert refused == 1
    versions = [v for s in seen for v in s]
    assert versions and set(versions) == {va, vb}  # both served, and nothing else
    assert all(set(s) == {va, vb} for s in seen)  # every client scored across the swaps
    status = admin.GetStatus(pb.GetModelStatusRequest(), timeout=TIMEOUT_S)
    assert status.swaps == SWAPS and status.champion == va
    metrics = srv.server.hub.registry
    assert metrics.get_sample_value("ordersight_model_swaps_total") == SWAPS
    assert metrics.get_sample_value("ordersight_model_load_failures_total") == 1
    assert (
        metrics.get_sample_value("ordersight_model_info", {"version": va, "role": "champion"}) == 1
    )


def test_the_cli_lists_loads_and_rolls_back(
    admin_server: RunningServer, model_registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    addr = ["--addr", f"127.0.0.1:{admin_server.port}"]
    vb = _version(model_registry, "b")
    assert main(["models", "list", *addr]) == 0
    out = capsys.readouterr().out
    assert "* " + _version(model_registry, "a") in out and "feature schema" in out
    assert main(["models", "load", "b", *addr]) == 0
    assert f"champion {vb}" in capsys.readouterr().out
    assert main(["models", "rollback", *addr]) == 0
    assert f"previous {vb}" in capsys.readouterr().out
    assert main(["models", "load", "broken", *addr]) == 1
    assert "FAILED_PRECONDITION" in capsys.readouterr().err
    assert main(["models", "status", *addr]) == 0
    assert "swaps 2" in capsys.readouterr().out


def test_a_score_batch_is_decided_by_one_version_across_a_swap(
    admin_server: RunningServer, model_registry: Path, history: pa.Table
) -> None:
    """A swap lands while a ScoreBatch is between its chunks: every decision of that call is
    the version it started with; the next call gets the new one."""
    srv = admin_server
    assert srv.server is not None
    engine = srv.server.engine
    featurize = engine.featurize
    calls, entered, release = [0], threading.Event(), threading.Event()

    def gated(enc):  # type: ignore[no-untyped-def]
        calls[0] += 1
        if calls[0] == 2:  # the second chunk waits for the swap
            entered.set()
            release.wait(TIMEOUT_S)
        return featurize(enc)

    engine.featurize = gated  # type: ignore[method-assign]
    orders = orders_of(history.slice(0, 2 * BATCH_CHUNK + 100))
    request = pb.ScoreBatchRequest(orders=pb.OrderList(orders=orders))
    answer: list[pb.ScoreBatchResponse] = []
    t = threading.Thread(target=lambda: answer.append(srv.stub.ScoreBatch(request, timeout=60)))
    t.start()
    try:
        assert entered.wait(TIMEOUT_S)
        status = _admin(srv).LoadModel(pb.LoadModelRequest(version="b"), timeout=60)
        assert status.champion == _version(model_registry, "b")
    finally:
        release.set()
        t.join(60)
    versions = {d.model_version for d in answer[0].decisions}
    assert len(answer[0].decisions) == len(orders)
    assert versions == {_version(model_registry, "a")}
    d = srv.stub.Score(simple_order("after"), timeout=TIMEOUT_S)
    assert d.model_version == _version(model_registry, "b")


def test_a_load_whose_caller_gave_up_does_not_swap(
    admin_server: RunningServer, model_registry: Path
) -> None:
    """The caller's deadline passes while the version is verified: it gets
    DEADLINE_EXCEEDED and the champion stays, whichever process took the call."""
    srv = admin_server
    assert srv.server is not None
    admin_obj = srv.server.admin
    prepare = admin_obj._prepare
    admin_obj._prepare = lambda path: (time.sleep(1.0), prepare(path))[1]  # type: ignore[method-assign]
    admin = _admin(srv)
    err = rpc_error(lambda: admin.LoadModel(pb.LoadModelRequest(version="b"), timeout=0.3))
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    metrics, end = srv.server.hub.registry, time.monotonic() + TIMEOUT_S
    while metrics.get_sample_value("ordersight_model_load_failures_total") != 1:
        assert time.monotonic() < end, "the abandoned load never ended"
        time.sleep(0.02)
    status = admin.GetStatus(pb.GetModelStatusRequest(), timeout=TIMEOUT_S)
    assert status.champion == _version(model_registry, "a") and status.swaps == 0


def test_rollback_to_a_version_with_a_tier_missing_is_refused(
    model_registry: Path, tmp_path: Path
) -> None:
    """Started on the rule fallback alone (no usable models), loaded a whole version: a
    rollback would bring the fallback back, and is refused."""
    srv = RunningServer(
        tmp_path / "none", registry=str(model_registry), allow_rules_only=True
    ).start()
    try:
        admin = _admin(srv)
        admin.LoadModel(pb.LoadModelRequest(version="a"), timeout=60)
        err = rpc_error(lambda: admin.Rollback(pb.RollbackRequest(), timeout=TIMEOUT_S))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "served with problems" in (err.details() or "")
        status = admin.GetStatus(pb.GetModelStatusRequest(), timeout=TIMEOUT_S)
        assert status.champion == _version(model_registry, "a")
    finally:
        srv.stop()


def test_sighup_loads_what_the_models_link_points_at(model_registry: Path, tmp_path: Path) -> None:
    """A deployment repoints `current` and sends SIGHUP to `ordersight serve`: the engine
    loads the new target (the fronts ignore the signal and keep serving)."""
    reg = tmp_path / "reg"
    reg.mkdir()
    for name in ("a", "b"):
        (reg / name).symlink_to(model_registry / name, target_is_directory=True)
    current = reg / "current"
    current.symlink_to("a")
    child = ChildServer(current).start()
    try:
        assert child.proc is not None
        admin = pb_grpc.ModelAdminStub(child.channel)
        assert admin.GetStatus(pb.GetModelStatusRequest(), timeout=TIMEOUT_S).champion == (
            _version(model_registry, "a")
        )
        tmp_link = reg / "current.new"
        tmp_link.symlink_to("b")
        tmp_link.replace(current)  # atomic, as a deployment would
        child.proc.send_signal(signal.SIGHUP)
        end = time.monotonic() + TIMEOUT_S
        while admin.GetStatus(pb.GetModelStatusRequest(), timeout=TIMEOUT_S).swaps < 1:
            assert time.monotonic() < end, "SIGHUP loaded nothing"
            time.sleep(0.05)
        status = admin.GetStatus(pb.GetModelStatusRequest(), timeout=TIMEOUT_S)
        assert status.champion == _version(model_registry, "b")
        code, _, answer = child.call("order", simple_order("after-hup").SerializeToString())
        assert code == grpc.StatusCode.OK and answer is not None
        assert pb.Decision.FromString(answer).model_version == _version(model_registry, "b")
    finally:
        child.stop()


def _status(srv: RunningServer) -> pb.ModelStatus:
    return _admin(srv).GetStatus(pb.GetModelStatusRequest(), timeout=TIMEOUT_S)


def _until(srv: RunningServer, done: Any) -> pb.ModelStatus:
    end = time.monotonic() + TIMEOUT_S
    while not done(status := _status(srv)):
        assert time.monotonic() < end, status
        time.sleep(0.02)
    return status


def test_a_challenger_decides_in_shadow_and_the_champion_answers(
    admin_server: RunningServer, model_registry: Path, history: pa.Table
) -> None:
    """b (the same models under another version) shadows a: it decides every order Score
    and ScoreBatch took, agrees on all of them, and every answer is still a's."""
    srv, admin = admin_server, _admin(admin_server)
    va, vb = _version(model_registry, "a"), _version(model_registry, "b")
    status = admin.SetChallenger(pb.LoadModelRequest(version="b"), timeout=60)
    assert status.challenger == vb and status.champion == va
    orders = orders_of(history.slice(7_000, 60))
    got = [srv.stub.Score(o, timeout=TIMEOUT_S) for o in orders[:30]]
    batch = srv.stub.ScoreBatch(pb.ScoreBatchRequest(orders=pb.OrderList(orders=orders[30:])))
    assert {d.model_version for d in [*got, *batch.decisions]} == {va}
    status = _until(srv, lambda s: s.challenger_decisions >= len(orders))
    assert status.challenger_decisions == len(orders) and status.challenger_dropped == 0
    assert status.challenger_agreement == 1.0
    metrics = srv.server.hub.registry  # type: ignore[union-attr]
    assert metrics.get_sample_value("ordersight_challenger_decisions_total") == len(orders)
    assert (
        metrics.get_sample_value("ordersight_model_info", {"version": vb, "role": "challenger"})
        == 0
    )
    status = admin.ClearChallenger(pb.ClearChallengerRequest(), timeout=TIMEOUT_S)
    assert status.challenger == "" and status.challenger_decisions == 0
    srv.stub.Score(simple_order("after-clear"), timeout=TIMEOUT_S)
    assert _status(srv).challenger_decisions == 0


def test_the_challenger_decisions_are_logged_beside_the_champions(
    model_registry: Path, history: pa.Table, tmp_path: Path
) -> None:
    """Each challenger row carries its champion row's seq and order id, both versions, and
    the challenger's own score and action."""
    srv = RunningServer(
        model_registry / "a", registry=str(model_registry), log_dir=str(tmp_path)
    ).start()
    va, vb = _version(model_registry, "a"), _version(model_registry, "b")
    _admin(srv).SetChallenger(pb.LoadModelRequest(version="b"), timeout=60)
    orders = orders_of(history.slice(7_100, 30))
    for o in orders[:20]:
        srv.stub.Score(o, timeout=TIMEOUT_S)
    srv.stub.ScoreBatch(pb.ScoreBatchRequest(orders=pb.OrderList(orders=orders[20:])))
    _until(srv, lambda s: s.challenger_decisions >= len(orders))
    srv.stop()
    rows = [r for b in segments.read_folder(tmp_path) for r in b.to_pylist()]
    champion = {(r["seq"], r["order_id"]): r for r in rows if r["kind"] == "decision"}
    challenger = {(r["seq"], r["order_id"]): r for r in rows if r["kind"] == "challenger"}
    assert set(challenger) == set(champion) and len(champion) == len(orders)
    for key, c in challenger.items():
        d = champion[key]
        assert (d["model_version"], d["champion_version"], d["challenger_version"]) == (va, va, vb)
        assert (c["model_version"], c["champion_version"], c["challenger_version"]) == (vb, va, vb)
        assert (c["action"], c["score"]) == (d["action"], d["score"])  # the same models
        assert c["features"] is None and c["reasons"] == []


def test_a_challenger_that_falls_behind_drops_and_never_delays(
    admin_server: RunningServer, history: pa.Table
) -> None:
    """The challenger's thread is held: its queue fills, the rest is dropped and counted,
    and every Score call is answered meanwhile."""
    srv = admin_server
    assert srv.server is not None
    shadow = srv.server.shadow
    _admin(srv).SetChallenger(pb.LoadModelRequest(version="b"), timeout=60)
    held, decide = threading.Event(), srv.server.engine.decide

    def slow(*args, **kw):  # type: ignore[no-untyped-def]
        if threading.current_thread().name == "challenger":
            held.wait(TIMEOUT_S)
        return decide(*args, **kw)

    srv.server.engine.decide = slow  # type: ignore[method-assign]
    shadow.queue_max = 3
    try:
        orders = orders_of(history.slice(8_000, 20))
        got = [srv.stub.Score(o, timeout=TIMEOUT_S) for o in orders]
        assert len(got) == len(orders)
        status = _status(srv)
        assert status.challenger_dropped >= len(orders) - 3 - 1
    finally:
        held.set()
    status = _until(srv, lambda s: s.challenger_decisions + s.challenger_dropped == 20)
    assert status.challenger_decisions <= 4
