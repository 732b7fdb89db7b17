"""Personal fields under a configured hash secret: the decision log and the snapshot hold
no IP, e-mail domain, card or address in clear, only keys under that secret; a snapshot or
a log written under another secret stops the start with what to do."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from ordersight.v1 import risk_pb2 as pb
from ordersight.v1 import risk_pb2_grpc as pb_grpc

from engine.decision_log import segments
from engine.decision_log.records import replay_arrays
from engine.orders import hashing
from engine.orders.schema import ENTITY_COLUMNS
from engine.serving.snapshots import NAME
from tests import oracle
from tests.fuzzing import ChildServer
from tests.grpc_harness import TIMEOUT_S, RunningServer, simple_order

IP, DOMAIN = "203.0.113.77", "privacy-probe.example"
CARD, ADDRESS = "card-fp-probe-5512", "addr-fp-probe-0420"
SALT = {c: int(s) for c, s in zip(ENTITY_COLUMNS, hashing.ENTITY_SALTS, strict=True)}


def _secret(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def _orders(n: int) -> list[pb.Order]:
    out = []
    for i in range(n):
        o = simple_order(f"priv-{i}", ip=IP, device_id=f"dev-{i % 2}")
        o.created_at.FromSeconds(1_769_947_200 + 60 * i)
        o.customer.email_domain = DOMAIN
        o.payment.card_fingerprint = CARD
        o.shipping.address_fingerprint = ADDRESS
        out.append(o)
    return out


def _refused(models_dir: Path, **settings: object) -> str:
    with pytest.raises(RuntimeError) as info:
        ChildServer(models_dir, **settings).start()
    return str(info.value)


def test_the_log_and_snapshot_hold_keys_under_the_secret_and_refuse_another(
    models_dir: Path, tmp_path: Path
) -> None:
    a = _secret(tmp_path / "a.secret", "first-secret-0123456789abcdef0123")
    b = _secret(tmp_path / "b.secret", "other-secret-0123456789abcdef0123")
    state, logs = tmp_path / "state", tmp_path / "log"
    settings = {"snapshot_dir": state, "snapshot_every_s": 0, "log_dir": logs}
    child = ChildServer(models_dir, hash_secret_file=a, **settings).start()
    try:
        stub = pb_grpc.OrderRiskStub(child.channel)
        for o in _orders(5):
            stub.Score(o, timeout=TIMEOUT_S)
    finally:
        assert child.stop() == 0, child.output()

    # No personal value in clear in any byte the engine wrote (the customer id, an account
    # id kept for audit, is: docs/SECURITY.md).
    written = [p for p in (*logs.iterdir(), *state.iterdir()) if p.is_file()]
    assert any(p.name == NAME for p in written) and segments.segments(logs)
    for path in written:
        data = path.read_bytes()
        for value in (IP, DOMAIN, CARD, ADDRESS):
            assert value.encode() not in data, (value, path.name)
    # The replay record holds exactly the keys under the secret, not the public ones.
    key = oracle.derive_key(a.read_bytes().strip())
    public = oracle.derive_key(hashing.PUBLIC_SECRET)
    rows = list(segments.read_folder(logs))
    arrays, _ = replay_arrays(rows[0].column("replay"))
    for column, value in (("ip", IP), ("email_domain", DOMAIN), ("card_fingerprint", CARD)):
        got = set(arrays.keys[:, ENTITY_COLUMNS.index(column)].tolist())
        assert got == {oracle.entity_key(value, SALT[column], key)}
        assert oracle.entity_key(value, SALT[column], public) not in got
    assert (logs / segments.KEY_FILE).read_text().strip() == hashing.key_id_of(
        a.read_bytes().strip()
    )

    # The same secret: its own snapshot restores.
    again = ChildServer(models_dir, hash_secret_file=a, **settings).start()
    assert again.stop() == 0
    assert "state restored from" in again.output(1 << 20)

    # Another secret: refused, naming the setting and the remedy.
    why = _refused(models_dir, hash_secret_file=b, **settings)
    assert "was taken under another hash secret" in why and "hash_secret_file" in why, why
    assert "start with an empty snapshot_dir" in why
    # Rotating with a fresh state but the old log: the log is refused too (a start without
    # a snapshot would replay it into the new keys).
    fresh = {**settings, "snapshot_dir": tmp_path / "state2"}
    why = _refused(models_dir, hash_secret_file=b, **fresh)
    assert "was written under another hash secret" in why and "another log_dir" in why, why
    # The rotation as documented: an empty snapshot folder and a new log.
    rotated = ChildServer(
        models_dir, hash_secret_file=b, **{**fresh, "log_dir": tmp_path / "log2"}
    ).start()
    assert rotated.stop() == 0, rotated.output()


def test_without_a_secret_the_server_warns_that_keys_are_not_secret(
    start_server: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="engine.serving.server"):
        start_server(single_process=True)
    assert "use a fixed public key, so they are not secret" in caplog.text
    assert hashing.is_public()
