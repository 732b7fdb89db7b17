"""Drift: PSI against the manifest's reference, per hour, the same online and offline, and
an alert when the served distribution shifts."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from ordersight.v1 import risk_pb2 as pb

from engine.cli import main
from engine.features.matrix import FEATURE_NAMES
from engine.monitoring import drift
from tests.grpc_harness import TIMEOUT_S, RunningServer, orders_of


def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(3)
    ref = drift.reference(rng.lognormal(3, 1, 50_000))
    same = drift.counts_of(rng.lognormal(3, 1, 5_000), np.asarray(ref["edges"]))
    moved = drift.counts_of(rng.lognormal(3.6, 1, 5_000), np.asarray(ref["edges"]))
    assert drift.psi(ref["shares"], same) < 0.02
    assert drift.psi(ref["shares"], moved) > drift.BOUND
    # Missing values have their own bin: an input that goes missing is a shift.
    gone = np.where(rng.random(5_000) < 0.3, np.nan, rng.lognormal(3, 1, 5_000))
    assert drift.psi(ref["shares"], drift.counts_of(gone, np.asarray(ref["edges"]))) > drift.BOUND
    assert abs(sum(ref["shares"]) - 1.0) < 1e-9


def test_training_records_the_score_and_top_features(models_dir: Path) -> None:
    manifest = json.loads((models_dir / "manifest.json").read_text())
    ref = manifest["drift"]
    assert set(ref["features"]) <= set(FEATURE_NAMES) and 1 <= len(ref["features"]) <= 10
    assert len(ref["score"]["shares"]) == len(ref["score"]["edges"]) + 2


def _shifted(history: pa.Table, start: int, n: int, factor: int) -> list[pb.Order]:
    orders = orders_of(history.slice(start, n))
    for o in orders[n // 2 :]:  # the second half: every amount `factor` times larger
        o.amount_minor *= factor
        for it in o.items:
            it.unit_price_minor *= factor
    return orders


@pytest.fixture
def drifted(history: pa.Table, tmp_path: Path, start_server: Callable[..., RunningServer]):
    srv = start_server(single_process=True, log_dir=str(tmp_path / "log"), drift_min_orders=50)
    orders = _shifted(history, 4_000, 12_000, 20)
    for i in range(0, len(orders), 500):
        srv.stub.ScoreBatch(
            pb.ScoreBatchRequest(orders=pb.OrderList(orders=orders[i : i + 500])), timeout=TIMEOUT_S
        )
    return srv, tmp_path / "log"


def test_a_shift_raises_a_drift_alert_and_the_report_agrees_with_the_monitor(
    drifted, models_dir: Path, tmp_path: Path
) -> None:
    srv, log = drifted
    srv.server.publish_drift()
    online = list(srv.server.drift.recent)
    assert len(online) >= 3
    alerts = srv.stub.ListAlerts(pb.ListAlertsRequest(), timeout=TIMEOUT_S).alerts
    drifts = [a for a in alerts if a.kind == "drift"]
    assert drifts, [a.series for a in alerts]
    assert all(a.actual > 0.2 for a in drifts)
    # Early hours (unshifted) are stable on the score.
    assert online[0].psi["score"] < 0.2
    out = tmp_path / "report"
    assert main(["report", "drift", "--log", str(log), "--models", str(models_dir),
                 "--min-orders", "50", "--out", str(out)]) == 0  # fmt: skip
    text = (out / "README.md").read_text()
    assert "Hours over the bound" in text and (out / "psi.png").is_file()
    from engine.reports.drift import hours_of

    manifest = json.loads((models_dir / "manifest.json").read_text())
    offline = {h.start: h for h in hours_of(log, manifest["drift"], 0.2, 50)}
    for h in online:  # every hour the engine closed, to the last digit
        assert offline[h.start].orders == h.orders
        for s, v in h.psi.items():
            assert offline[h.start].psi[s] == pytest.approx(v, rel=1e-12, abs=1e-12)


def test_the_drift_report_refuses_bad_input(tmp_path: Path, models_dir: Path, capsys) -> None:
    assert (
        main(["report", "drift", "--log", str(tmp_path / "none"), "--models", str(models_dir)]) == 2
    )
    assert "--log" in capsys.readouterr().err
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "manifest.json").write_text("{}")
    (tmp_path / "log").mkdir()
    assert (
        main(["report", "drift", "--log", str(tmp_path / "log"), "--models", str(tmp_path / "m")])
        == 2
    )
    assert "no drift reference" in capsys.readouterr().err


def test_no_decisions_in_the_log_is_an_error(tmp_path: Path, models_dir: Path, capsys) -> None:
    (tmp_path / "log").mkdir()
    assert (
        main(["report", "drift", "--log", str(tmp_path / "log"), "--models", str(models_dir)]) == 2
    )
    assert "no decisions" in capsys.readouterr().err
