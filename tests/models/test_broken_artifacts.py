"""Every way an artifact folder can be broken gets a clear message and the documented
behaviour (engine.models.artifacts): a bad manifest stops the load, a broken tier is left
out and named, and a server says so in its health and refuses to start with neither tier."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from ordersight.v1 import risk_pb2 as pb

from engine.errors import ModelLoadError
from engine.models import artifacts
from tests.fuzzing import ChildServer
from tests.grpc_harness import RunningServer, simple_order

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

Damage = Callable[[Path], None]


def _manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def _save(root: Path, m: dict) -> None:
    (root / "manifest.json").write_text(json.dumps(m))


def truncate(name: str, keep: float = 0.5) -> Damage:
    """Cut the file, and record the cut file's checksum (what a bad copy then re-hash does)."""

    def damage(root: Path) -> None:
        path = root / name
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])
        _rehash(root, name)

    return damage


def corrupt(name: str) -> Damage:
    """Overwrite bytes in the middle, checksum updated."""

    def damage(root: Path) -> None:
        path = root / name
        data = bytearray(path.read_bytes())
        mid = len(data) // 2
        data[mid : mid + 64] = bytes((b ^ 0x5A) for b in data[mid : mid + 64])
        path.write_bytes(bytes(data))
        _rehash(root, name)

    return damage


def _set_checksum(root: Path, name: str, digest: str) -> None:
    """Record `digest` as the manifest's checksum of the file `name`."""
    m = _manifest(root)
    for entry in (m["tier1"], m["tier2"]):
        for key, value in list(entry.items()):
            if value == name:
                entry[f"{key}_sha256"] = digest
    _save(root, m)


def wrong_checksum(name: str) -> Damage:
    return lambda root: _set_checksum(root, name, "0" * 64)


def _rehash(root: Path, name: str) -> None:
    _set_checksum(root, name, artifacts.sha256(root / name))


@pytest.fixture
def copy(models_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "models"
    shutil.copytree(models_dir, out)
    return out


def _drop_manifest(root: Path) -> None:
    (root / "manifest.json").unlink()


def _truncate_manifest(root: Path) -> None:
    text = (root / "manifest.json").read_text()
    (root / "manifest.json").write_text(text[: len(text) // 2])


def _binary_manifest(root: Path) -> None:
    (root / "manifest.json").write_bytes(b"\xff\xfe\x00garbage")


def _list_manifest(root: Path) -> None:
    (root / "manifest.json").write_text("[1, 2]")


def _no_version(root: Path) -> None:
    m = _manifest(root)
    del m["version"]
    _save(root, m)


def _other_format(root: Path) -> None:
    m = _manifest(root)
    m["format"] = 99
    _save(root, m)


def _other_features(root: Path) -> None:
    m = _manifest(root)
    m["feature_names"] = m["feature_names"][:-1]
    _save(root, m)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_drop_manifest, "no manifest.json"),
        (_truncate_manifest, "is not valid JSON"),
        (_binary_manifest, "is not valid JSON"),
        (_list_manifest, "is not a JSON object"),
        (_no_version, "lacks 'version'"),
        (_other_format, "format must be 1"),
        (_other_features, "feature schema differs"),
    ],
    ids=["missing", "truncated", "binary", "not-an-object", "no-version", "format", "features"],
)
def test_a_bad_manifest_stops_the_load_with_the_reason(
    copy: Path, damage: Damage, message: str
) -> None:
    damage(copy)
    with pytest.raises(ModelLoadError, match=message):
        artifacts.load(copy)


TIER_ONE_CASES = [
    (truncate("tier1.npz"), "tier1.npz is not a readable .npz archive"),
    (corrupt("tier1.npz"), "tier1.npz"),
    (wrong_checksum("tier1.npz"), "tier1.npz does not match its checksum"),
    (lambda root: (root / "tier1.npz").unlink(), "tier1.npz is missing"),
]
TIER_TWO_CASES = [
    (truncate("tier2.onnx"), "tier2.onnx is not a loadable ONNX graph"),
    (corrupt("tier2.onnx"), "tier2.onnx"),
    (wrong_checksum("tier2.onnx"), "tier2.onnx does not match its checksum"),
    (truncate("tier2.lgb.txt", 0.6), "tier2.lgb.txt"),
    (wrong_checksum("tier2.lgb.txt"), "tier2.lgb.txt does not match its checksum"),
    (truncate("parity.npz"), "parity.npz is not a readable .npz archive"),
    (corrupt("parity.npz"), "parity.npz"),
    (wrong_checksum("parity.npz"), "parity.npz does not match its checksum"),
]


TIER_CASES = [
    *(pytest.param("tier one", d, m, id=f"tier1-{i}") for (d, m), i in
      zip(TIER_ONE_CASES, ("truncated", "corrupt", "checksum", "missing"), strict=True)),
    *(pytest.param("tier two", d, m, id=i) for (d, m), i in zip(TIER_TWO_CASES, (
        "onnx-truncated", "onnx-corrupt", "onnx-checksum", "booster-truncated",
        "booster-checksum", "parity-truncated", "parity-corrupt", "parity-checksum",
    ), strict=True)),
]  # fmt: skip


@pytest.mark.parametrize(("tier", "damage", "message"), TIER_CASES)
def test_a_broken_tier_is_left_out_and_named(
    copy: Path, tier: str, damage: Damage, message: str
) -> None:
    damage(copy)
    m = artifacts.load(copy)
    broken, whole = (m.tier1, m.tier2) if tier == "tier one" else (m.tier2, m.tier1)
    assert broken is None and whole is not None
    assert len(m.problems) == 1
    assert m.problems[0].startswith(f"{tier} unavailable: ") and message in m.problems[0]


def test_a_booster_that_is_not_the_graphs_model_is_refused(copy: Path) -> None:
    """The LightGBM text explains the ONNX graph's scores; another model's text (whole and
    with a right checksum) must not pass."""
    text = (copy / "tier2.lgb.txt").read_text()
    lines = text.splitlines()
    leaf = next(i for i, line in enumerate(lines) if line.startswith("leaf_value="))
    values = lines[leaf].split("=", 1)[1].split()
    values = values[::-1]  # the same bytes in another order: sizes and format unchanged
    lines[leaf] = "leaf_value=" + " ".join(values)
    (copy / "tier2.lgb.txt").write_text("\n".join(lines) + "\n")
    _rehash(copy, "tier2.lgb.txt")
    m = artifacts.load(copy)
    assert m.tier2 is None
    assert "disagrees with" in m.problems[0] and "not the same model" in m.problems[0]


def _health(channel: grpc.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


@pytest.mark.parametrize("single_process", [False, True], ids=["fronts", "one_process"])
def test_a_server_with_a_broken_tier_two_serves_and_says_so(
    copy: Path, single_process: bool
) -> None:
    truncate("tier2.onnx")(copy)
    srv = RunningServer(copy, single_process=single_process).start()
    try:
        _broken_tier_two_served(srv)
    finally:
        srv.stop()


def _broken_tier_two_served(srv: RunningServer) -> None:
    assert _health(srv.channel, "") == SERVING
    assert _health(srv.channel, "ordersight.v1.OrderRisk") == SERVING
    assert _health(srv.channel, "ordersight.tier_one") == SERVING
    assert _health(srv.channel, "ordersight.tier_two") == NOT_SERVING
    big = simple_order("big", amount_minor=10_000_000)  # high value: always escalated
    d = srv.stub.Score(big, timeout=10)
    assert d.path == pb.FALLBACK
    alerts = srv.stub.ListAlerts(pb.ListAlertsRequest(), timeout=10).alerts
    down = [a for a in alerts if a.series == "component{name=ordersight.tier_two}"]
    assert len(down) == 1 and down[0].severity == "critical"
    assert "tier2.onnx is not a loadable ONNX graph" in down[0].explanation


def test_a_truncated_tier_one_starts_a_server_without_a_traceback(copy: Path) -> None:
    """The report: a truncated tier1.npz (checksum updated) ended start-up with BadZipFile."""
    truncate("tier1.npz")(copy)
    srv = ChildServer(copy).start()
    try:
        assert _health(srv.channel, "ordersight.tier_one") == NOT_SERVING
        assert _health(srv.channel, "ordersight.tier_two") == SERVING
        code, _, _ = srv.call("order", simple_order("t1").SerializeToString())
        assert code == grpc.StatusCode.OK
    finally:
        srv.stop()
    out = srv.output(100_000)
    assert "Traceback" not in out
    assert "tier one unavailable" in out and "is not a readable .npz archive" in out


def test_neither_tier_stops_start_up_unless_rules_only_is_allowed(copy: Path) -> None:
    wrong_checksum("tier1.npz")(copy)
    wrong_checksum("tier2.onnx")(copy)
    srv = ChildServer(copy)
    with pytest.raises(RuntimeError, match="not SERVING") as info:
        srv.start()
    assert "neither tier loads" in str(info.value) and "allow_rules_only" in str(info.value)
    assert "Traceback" not in str(info.value)

    srv = ChildServer(copy, allow_rules_only=True).start()
    try:
        assert _health(srv.channel, "") == SERVING
        assert _health(srv.channel, "ordersight.tier_one") == NOT_SERVING
        assert _health(srv.channel, "ordersight.tier_two") == NOT_SERVING
        code, _, body = srv.call("order", simple_order("r1").SerializeToString())
        assert code == grpc.StatusCode.OK
        assert pb.Decision.FromString(body).path == pb.FALLBACK
    finally:
        srv.stop()
