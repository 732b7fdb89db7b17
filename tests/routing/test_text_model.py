"""The routing text model: a real model trained on simulated cases once per module, its ONNX
graph against scikit-learn, languages, the GENERAL queue, the threshold, the simulator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.routing.case_sim import QUEUES, simulate_cases
from engine.routing.text_fit import FittedText, TrainOptions, choose_threshold
from engine.routing.text_model import TextRouter, train
from engine.routing.text_prep import GENERAL, prepare
from engine.routing.text_session import PARITY_TOLERANCE, run

TEXT_COLS = ("subject", "body")


def _columns(t: pa.Table) -> list[list[str]]:
    return [t.column(c).to_pylist() for c in TEXT_COLS]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[TextRouter, FittedText]:
    cases = simulate_cases(900, seed=3)
    return train(
        _columns(cases),
        cases.column("queue").to_pylist(),
        cases.column("priority").to_pylist(),
        TrainOptions(c_grid=(1.0,)),
        tmp_path_factory.mktemp("routing") / "model",
        text_cols=TEXT_COLS,
        label_col="queue",
        priority_col="priority",
    )


@pytest.fixture(scope="module")
def unseen() -> pa.Table:
    return simulate_cases(400, config="shifted", seed=99)


def _assert_parity(router: TextRouter, fitted: FittedText, texts: list[str]) -> None:
    """Both graphs a loaded model runs: dense heads, and sparse heads for one or two rows."""
    assert router.small is not None
    queue, priority = fitted.predict_proba(texts)
    for sess in (router.session, router.small):
        ours = run(sess, texts, router.heads)
        for got, want in ((ours[0], queue), (ours[1], priority)):
            assert want is not None
            np.testing.assert_allclose(got, want, atol=PARITY_TOLERANCE, rtol=0)
            top2 = np.sort(want, axis=1)[:, -2:]
            clear = top2[:, 1] - top2[:, 0] > 2 * PARITY_TOLERANCE
            assert (got.argmax(axis=1) == want.argmax(axis=1))[clear].all()


def test_onnx_equals_sklearn_on_unseen_cases(
    trained: tuple[TextRouter, FittedText], unseen: pa.Table
) -> None:
    router, fitted = trained
    texts = prepare(_columns(unseen))
    _assert_parity(router, fitted, texts)
    r = router.route_texts(texts)
    sk = fitted.predict_proba(texts)[0]
    top2 = np.sort(sk, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * PARITY_TOLERANCE
    want = np.asarray(fitted.labels, dtype=object)[sk.argmax(axis=1)]
    assert (np.asarray(r.top, dtype=object) == want)[clear].all() and clear.mean() > 0.95
    assert router.manifest["parity"]["max_abs_error"] <= PARITY_TOLERANCE


_RAW_WORDS = sorted(
    {w for b in simulate_cases(60, seed=5).column("body").to_pylist() for w in b.split()}
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.lists(st.one_of(st.sampled_from(_RAW_WORDS), st.text(max_size=12)), max_size=30).map(
            " ".join
        ),
        min_size=1,
        max_size=6,
    )
)
def test_onnx_equals_sklearn_on_any_text(
    trained: tuple[TextRouter, FittedText], bodies: list[str]
) -> None:
    """Arbitrary Unicode (controls, emoji, other scripts, stray whitespace) mixed with the
    cases' own words: `prepare` plus the char-level graph still count what char_wb counts."""
    router, fitted = trained
    texts = prepare([[""] * len(bodies), bodies])
    _assert_parity(router, fitted, texts)
    one = [float(router.route_texts([t]).confidence[0]) for t in texts[:2]]  # sparse, row by row
    dense = run(router.session, texts[:2], router.heads)[0].max(axis=1)
    np.testing.assert_allclose(one, dense, atol=PARITY_TOLERANCE, rtol=0)


def test_prepare_keeps_every_script() -> None:
    got = prepare([["Straße ÄÖÜ"], ["ñandú, 価格 -- Δέλτα\t\n x_y"]])
    assert got == [" strasse äöü | ñandú 価格 δέλτα x y "]


def test_german_cases_are_classified(
    trained: tuple[TextRouter, FittedText], unseen: pa.Table
) -> None:
    router, _ = trained
    german = unseen.filter(pc.equal(unseen.column("language"), "de"))
    assert german.num_rows > 100
    r = router.route(_columns(german))
    right = np.asarray(r.top) == np.asarray(german.column("queue").to_pylist())
    assert right.mean() > 0.85
    own = router.route(
        [
            ["Rücksendung", "Lieferung verspätet"],
            [
                "Das Gerät ist defekt, bitte schicken Sie ein Retourenetikett für die RMA.",
                "Die Sendung ist seit einer Woche unterwegs und der Spediteur meldet nichts.",
            ],
        ]
    )
    assert own.top == ["returns_rma", "delivery_exception"]


def test_vocabulary_cap_cutting_a_bigrams_word_still_exports(tmp_path: Path) -> None:
    """With equal counts the cap keeps 'apple' and 'apple zebra' but cuts 'zebra'; the graph
    cannot count a bigram whose word it does not know, so training must keep them in step."""
    texts = [["apple zebra"] * 6 + ["mango kiwi"] * 6]
    labels = ["fruit"] * 6 + ["other"] * 6
    options = TrainOptions(max_word_features=3, c_grid=(1.0,))
    router, fitted = train(texts, labels, None, options, tmp_path / "m", text_cols=("body",),
                           label_col="queue")  # fmt: skip
    vocab = fitted.features.transformer_list[0][1].vocabulary_
    assert all(w in vocab for g in vocab for w in g.split(" "))
    assert router.route(texts).top == labels


def test_low_confidence_goes_to_general(trained: tuple[TextRouter, FittedText]) -> None:
    router, _ = trained
    assert 1 / len(QUEUES) < router.threshold < 1
    r = router.route([["zzzq"], ["xqxq wvwv"]])
    assert r.predicted == [GENERAL]
    assert r.top[0] in QUEUES and r.confidence[0] < router.threshold


def test_threshold_keeps_the_target_precision() -> None:
    conf = np.array([0.95, 0.9, 0.8, 0.8, 0.6, 0.5])
    right = np.array([True, True, True, False, False, True])
    assert choose_threshold(conf, right, 0.75) == 0.8  # 3 of 4 at >= 0.8 (a tie routes whole)
    assert choose_threshold(conf, right, 1.0) == 0.9
    assert choose_threshold(conf, right, 0.5) == 0.5
    assert choose_threshold(conf, ~right, 0.9) is None


def test_simulator_is_seeded_and_shifted_differs() -> None:
    a, b = simulate_cases(300, seed=4), simulate_cases(300, seed=4)
    assert a.equals(b)
    shifted = simulate_cases(300, config="shifted", seed=4)

    def german(t: pa.Table) -> float:
        return float(np.mean(np.asarray(t.column("language").to_pylist()) == "de"))

    assert set(a.column("language").to_pylist()) == {"en", "de"}
    assert german(shifted) > german(a)
    assert set(a.column("queue").to_pylist()) <= set(QUEUES)
