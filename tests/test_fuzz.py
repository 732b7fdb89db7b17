"""Fuzzing a real server in a child process (tests.fuzzing): mutated requests of each kind
must be answered OK, INVALID_ARGUMENT, RESOURCE_EXHAUSTED or ALREADY_EXISTS, and must not
kill the server.

FUZZ_CASES (default 1500) sets the cases per kind, FUZZ_SEED (default 0) the seed, and
FUZZ_ARTIFACTS where failing requests are saved (default: the test's tmp_path).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pyarrow as pa
import pyarrow.ipc
import pytest
from ordersight.v1 import risk_pb2 as pb

from tests.fuzzing import KINDS, ChildServer, run_campaign, seeds, wrap

CASES = int(os.environ.get("FUZZ_CASES", "1500"))
SEED = int(os.environ.get("FUZZ_SEED", "0"))


@pytest.fixture(scope="module")
def child(models_dir: Path) -> Iterator[ChildServer]:
    server = ChildServer(models_dir).start()
    yield server
    server.stop()


@pytest.fixture
def fuzz_server(child: ChildServer) -> ChildServer:
    """The module's server, restarted if an earlier test killed it."""
    return child if child.alive() else child.restart()


def _rows(ipc: bytes) -> int:
    return pa.ipc.open_stream(ipc).read_all().num_rows


def test_unmutated_seeds_are_scored(fuzz_server: ChildServer) -> None:
    """The seeds are answered OK with one decision per order, so the fuzz tests below cannot
    pass by having everything rejected."""
    for kind in KINDS:
        for i, data in enumerate(seeds(kind)):
            code, details, reply = fuzz_server.call(kind, wrap(kind, data))
            assert code == grpc.StatusCode.OK, f"{kind} seed {i}: {code.name}: {details}"
            assert reply is not None
            if kind == "order":
                assert pb.Decision.FromString(reply).order_id == pb.Order.FromString(data).order_id
                continue
            want = (
                len(pb.ScoreBatchRequest.FromString(data).orders.orders)
                if kind == "batch_orders"
                else _rows(data)
            )
            resp = pb.ScoreBatchResponse.FromString(reply)
            got = len(resp.decisions) or (
                _rows(resp.decisions_arrow_ipc) if resp.decisions_arrow_ipc else 0
            )
            assert want > 0 and got == want, f"{kind} seed {i}: {got} decisions for {want}"


@pytest.mark.parametrize("kind", KINDS)
def test_fuzz(kind: str, fuzz_server: ChildServer, tmp_path: Path) -> None:
    failures = run_campaign(fuzz_server, kind, CASES, SEED, tmp_path)
    if failures:  # a crash comes first
        shown = "\n".join(str(f) for f in failures[:5])
        pytest.fail(f"{len(failures)} failures in {CASES} {kind} cases:\n{shown}", pytrace=False)
