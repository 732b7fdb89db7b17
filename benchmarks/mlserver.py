"""MLServer baseline: mlserver-lightgbm serving the tier-two LightGBM model over the V2 protocol.

    python -m benchmarks.mlserver [--sweep] [--models models/default] [--python PY]

MLServer 1.7.1 and mlserver-lightgbm 1.7.1 live in their own venv, benchmarks/.venv-mlserver
(`ensure_venv`; uvloop < 0.22, as newer uvloop crashes its parallel workers). Each Score's
order becomes one V2 ModelInfer call carrying that order's 87 features as an FP32 tensor
"input-0" of shape [1, 87] in raw_input_contents; `verify` checks the answers against
lightgbm.Booster.predict (exact on the parity sample, NaNs included). The server runs with
access logs (`debug`) and Prometheus metrics off, and every native thread pool at one thread.

How its best configuration was found (2 shared cores, load generator on the same machine,
other benchmarks running alongside: load average 2-5, so single runs vary by +-30%):
closed loop at concurrency 64 (2 client processes, 3-5 s after 1 s warm-up) and at
concurrency 1, over (parallel_workers, max_batch_size, max_batch_time):

1. One pass over SWEEP with metrics on, c64 calls/s: (0, 1, 0) 1,572; (1, 1, 0) 1,222;
   (2, 1, 0) 1,010; (0, 8, 1 ms) 1,682; (0, 32, 2 ms) 1,132; (0, 64, 5 ms) 1,395;
   (1, 32, 2 ms) 1,226; (1, 64, 5 ms) 1,459; (2, 32, 2 ms) 1,429. At c1, batching adds its
   wait: p50 1.06 ms unbatched, 3.0 ms at 1 ms, 8.9 ms at 5 ms; a worker process adds ~2 ms.
2. All candidates served at once, three interleaved rounds (median c64 calls/s): with metrics
   on, (0, 1, 0) 1,306; (0, 8, 1 ms) 1,407; (0, 16, 1 ms) 1,587; (0, 32, 0.5 ms) 1,586;
   (1, 64, 5 ms) 1,718; (2, 32, 2 ms) 1,096. Metrics off: (0, 1, 0) 2,026 and (0, 8, 1 ms)
   1,290 -- the per-call Prometheus interceptor costs about a third, so it stays off (the
   engine exports no per-call metrics either).
3. Metrics off, three interleaved rounds (c64 median / max calls/s; c1 p50 / p99 ms):
   (0, 1, 0) 2,542 / 2,673, 1.10 / 3.0; (0, 32, 0.5 ms) 1,818 / 2,241, 1.35 / 3.2;
   (0, 16, 1 ms) 1,935 / 2,454, 2.76 / 6.0; (0, 64, 2 ms) 2,178 / 3,174, 4.51 / 7.1;
   (1, 1, 0) 1,255 / 1,487, 2.27 / 4.9.
4. CONFIGS from a fresh venv, 4 s each, load average ~1.5 (c64 calls/s; c1 p50 / p99 ms):
   (0, 1, 0) 2,646, 1.23 / 2.5; (0, 64, 2 ms) 1,540, 4.33 / 6.6; (1, 64, 5 ms) 1,456,
   9.47 / 12.9. Load generator: 0.5-0.8 of a core at c64.

Winner: parallel_workers 0 (inference on the server's event loop), adaptive batching off,
metrics off: ~2,500-2,650 calls/s at c64 (2,969 at best) and ~1.1 ms p50
at c1. Why: one-row Booster.predict takes ~40 us of the ~400 us of server CPU per call; the
rest is MLServer's per-request Python (protobuf -> pydantic -> numpy codec, and back), which
batching does not remove -- it adds queueing, merging and splitting, plus its wait at low
load. The server process saturates one core; parallel workers could use the other, but it
is shared with the load generator, and each call then pays a pickled round trip through
multiprocessing queues. Large batches (64, 2 ms) varied most and once reached 3,174, so
CONFIGS keeps that contender and one worker configuration next to the winner, and
`best_config` picks the winner of the run at hand.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import lightgbm as lgb
import numpy as np
from google.protobuf import wrappers_pb2

from benchmarks import loadgen

PINS = ("mlserver==1.7.1", "mlserver-lightgbm==1.7.1", "uvloop<0.22")
VENV_DIR = Path("benchmarks") / ".venv-mlserver"
MODEL_NAME = "tier2"
INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
READY_METHOD = "/inference.GRPCInferenceService/ModelReady"
GRPC_PORT, HTTP_PORT, METRICS_PORT = 50081, 50082, 50083
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
# One thread per native library: LightGBM's OpenMP threads otherwise spin between the
# single-row calls and fight the event loop for the two cores (2-4x slower here).
THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}


def _venv_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for the MLServer venv's processes: one thread per native library and
    no PYTHONPATH, so the project's packages stay out of that venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return {**env, **THREAD_ENV, **(extra or {})}


class Config(NamedTuple):
    parallel_workers: int  # 0: inference in the server process
    max_batch_size: int  # 1: adaptive batching off
    max_batch_time_s: float


SWEEP = [  # everything tried above; `--sweep` re-runs it (about 5 minutes)
    Config(0, 1, 0.0),
    Config(1, 1, 0.0),
    Config(2, 1, 0.0),
    Config(0, 8, 0.001),
    Config(0, 16, 0.001),
    Config(0, 32, 0.0005),
    Config(0, 32, 0.002),
    Config(0, 64, 0.002),
    Config(0, 64, 0.005),
    Config(1, 32, 0.002),
    Config(1, 64, 0.005),
    Config(2, 32, 0.002),
]
# What `make bench` tries: the winner first, then the best batching and worker contenders.
CONFIGS = [Config(0, 1, 0.0), Config(0, 64, 0.002), Config(1, 64, 0.005)]


def ensure_venv(root: Path) -> Path:
    """Create `benchmarks/.venv-mlserver` under `root` with the pinned MLServer; its python.

    A stamp holding the pins marks a finished install, so a present venv costs one file read
    and an interrupted or differently pinned one is completed by pip.
    """
    venv = root / VENV_DIR
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    wanted = "\n".join(PINS)
    if stamp.exists() and stamp.read_text() == wanted:
        return python
    if not python.exists():
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    # Run from inside the venv: from the project's root pip would take its egg-info for an
    # installed package and warn about that package's missing dependencies.
    pip = [str(python), "-m", "pip", "install", "-q", *PINS]
    subprocess.run(pip, cwd=venv, env=_venv_env(), check=True)
    stamp.write_text(wanted)
    return python


def write_model_repo(
    model_txt: Path,
    workdir: Path,
    *,
    parallel_workers: int,
    max_batch_size: int,
    max_batch_time_s: float,
    grpc_port: int = GRPC_PORT,
    http_port: int = HTTP_PORT,
    metrics_port: int = METRICS_PORT,
) -> Path:
    """Write an MLServer model repository serving `model_txt` as MODEL_NAME; its path.

    Access logs (`debug`) and Prometheus metrics are off (see the module's notes), so the
    metrics port is not opened. mlserver-lightgbm loads the LightGBM text model from its
    well-known file name, model.bst.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    settings = {
        "debug": False,
        "host": "127.0.0.1",
        "grpc_port": grpc_port,
        "http_port": http_port,
        "metrics_port": metrics_port,  # unused while metrics_endpoint is null
        "metrics_endpoint": None,
        "metrics_dir": str(workdir / ".metrics"),
        "environments_dir": str(workdir / ".envs"),
        "parallel_workers": parallel_workers,
    }
    (workdir / "settings.json").write_text(json.dumps(settings, indent=2))
    model_dir = workdir / MODEL_NAME
    model_dir.mkdir(exist_ok=True)
    shutil.copyfile(model_txt, model_dir / "model.bst")
    model_settings = {
        "name": MODEL_NAME,
        "implementation": "mlserver_lightgbm.LightGBMModel",
        "max_batch_size": max_batch_size,
        "max_batch_time": max_batch_time_s,
        "parameters": {"uri": "./model.bst"},
    }
    (model_dir / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
    return workdir


def _model_ready(channel: grpc.Channel) -> bool:
    # ModelReadyRequest{name} and ModelReadyResponse{ready} are wire-identical to the
    # StringValue and BoolValue wrappers (field 1), so no V2 protos are needed here.
    call = channel.unary_unary(
        READY_METHOD,
        request_serializer=wrappers_pb2.StringValue.SerializeToString,
        response_deserializer=wrappers_pb2.BoolValue.FromString,
    )
    try:
        return call(wrappers_pb2.StringValue(value=MODEL_NAME), timeout=1.0).value
    except grpc.RpcError:
        return False


def start(
    python: Path, repo: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Launch `mlserver start repo` in its own process group; return once the model is ready.

    The server's output goes to repo/mlserver.log. Raises RuntimeError with the log's tail if
    the server exits or the model is not ready within START_TIMEOUT_S.
    """
    log_path = repo / "mlserver.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(python.parent / "mlserver"), "start", str(repo)],
            cwd=repo,
            env=_venv_env(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    grpc_port = json.loads((repo / "settings.json").read_text())["grpc_port"]
    deadline = time.monotonic() + START_TIMEOUT_S
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        while not _model_ready(channel):
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(proc)
                tail = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"MLServer did not get ready (exit {proc.returncode}):\n{tail}")
            time.sleep(0.1)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the server, which shuts its inference workers down; then SIGKILL what is left of
    its process group (a hung server, or workers outliving it)."""
    proc.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_TIMEOUT_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _frame(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def _unframe(data: bytes) -> list[bytes]:
    items, offset = [], 0
    while offset < len(data):
        (size,) = struct.unpack_from("<I", data, offset)
        items.append(data[offset + 4 : offset + 4 + size])
        offset += 4 + size
    return items


# Run by the MLServer venv's python (it has the V2 protos); framed messages over stdin/stdout.
_VENV_PRELUDE = """
import io, struct, sys
import numpy as np
from mlserver.grpc import dataplane_pb2 as pb
def frame(body):
    sys.stdout.buffer.write(struct.pack("<I", len(body)) + body)
"""
_BUILD_REQUESTS = """
X = np.load(io.BytesIO(sys.stdin.buffer.read())).astype("<f4")
for row in X:
    frame(pb.ModelInferRequest(
        model_name=sys.argv[1],
        inputs=[pb.ModelInferRequest.InferInputTensor(
            name="input-0", datatype="FP32", shape=[1, X.shape[1]])],
        raw_input_contents=[row.tobytes()],
    ).SerializeToString())
"""
_DECODE_RESPONSES = """
from mlserver.codecs import NumpyCodec
from mlserver.grpc.converters import ModelInferResponseConverter
data, offset = sys.stdin.buffer.read(), 0
while offset < len(data):
    (size,) = struct.unpack_from("<I", data, offset)
    resp = pb.ModelInferResponse.FromString(data[offset + 4 : offset + 4 + size])
    out = ModelInferResponseConverter.to_types(resp).outputs[0]
    frame(np.asarray(NumpyCodec.decode_output(out), dtype="<f8").tobytes())
    offset += 4 + size
"""


def _run_in_venv(python: Path, code: str, stdin: bytes, *args: str) -> list[bytes]:
    out = subprocess.run(
        [str(python), "-c", _VENV_PRELUDE + code, *args],
        input=stdin,
        capture_output=True,
        cwd=python.parent,
        env=_venv_env(),
    )
    if out.returncode:
        raise RuntimeError(f"{python} failed:\n{out.stderr.decode(errors='replace')[-3000:]}")
    return _unframe(out.stdout)


def infer_requests(python: Path, X: np.ndarray, model_name: str = MODEL_NAME) -> list[bytes]:
    """Serialised V2 ModelInferRequests, one per row of X: FP32 "input-0" of shape [1, n]."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(X, dtype=np.float32))
    return _run_in_venv(python, _BUILD_REQUESTS, buf.getvalue(), model_name)


def verify(
    python: Path, target: str, model_txt: Path, X: np.ndarray, requests: list[bytes]
) -> float:
    """Score X's rows (`requests` built from them) through the server at `target`.

    Returns the largest |MLServer score - lightgbm.Booster.predict|; raises if it is 1e-5
    or more, so a benchmark never times a server that answers wrongly.
    """
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(INFER_METHOD)
        responses = [call(body, timeout=10.0) for body in requests]
    decoded = _run_in_venv(python, _DECODE_RESPONSES, _frame(responses))
    got = np.concatenate([np.frombuffer(d, dtype="<f8") for d in decoded])
    expected = lgb.Booster(model_file=str(model_txt)).predict(X)
    diff = float(np.max(np.abs(got - expected)))
    if not diff < 1e-5:
        raise RuntimeError(f"MLServer's scores differ from Booster.predict by {diff}")
    return diff


def best_config(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The winner among `loadgen.run` results at one closed-loop load, each carrying its
    config's fields (parallel_workers, max_batch_size, max_batch_time_s): the most calls/s
    among runs without errors."""
    clean = [r for r in results if r["errors"] == 0]
    if not clean:
        raise RuntimeError("every MLServer configuration returned errors")
    return max(clean, key=lambda r: r["calls_per_s"])


def measure(
    python: Path,
    model_txt: Path,
    X: np.ndarray,
    requests: list[bytes],
    config: Config,
    workdir: Path,
    *,
    duration_s: float = 5.0,
) -> dict[str, Any]:
    """Serve `config`, check its scores on X's first rows (`requests` are X's rows), then
    run closed loop at concurrency 64 (two client processes) and 1."""
    repo = write_model_repo(model_txt, workdir, **config._asdict())
    t0 = time.perf_counter()
    proc = start(python, repo)
    startup_s = time.perf_counter() - t0
    target = f"127.0.0.1:{GRPC_PORT}"
    try:
        verify(python, target, model_txt, X[:16], requests[:16])
        c64 = loadgen.run(
            loadgen.Load(target, INFER_METHOD, 64, duration_s=duration_s, procs=2), requests
        )
        c1 = loadgen.run(loadgen.Load(target, INFER_METHOD, 1, duration_s=duration_s), requests)
    finally:
        stop(proc)
    return {"config": config._asdict(), "startup_s": startup_s, "c64": c64, "c1": c1}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", type=Path, default=Path("models/default"))
    p.add_argument("--sweep", action="store_true", help="try SWEEP rather than CONFIGS")
    p.add_argument("--python", type=Path, help="an MLServer venv's python (default: ensure_venv)")
    p.add_argument("--duration", type=float, default=5.0)
    args = p.parse_args()
    python = args.python or ensure_venv(Path.cwd())
    X = np.load(args.models / "parity.npz")["X"]
    requests = infer_requests(python, X)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, config in enumerate(SWEEP if args.sweep else CONFIGS):
            r = measure(
                python,
                args.models / "tier2.lgb.txt",
                X,
                requests,
                config,
                Path(tmp) / str(i),
                duration_s=args.duration,
            )
            results.append({**config._asdict(), **r["c64"]})
            c64, c1 = r["c64"], r["c1"]
            print(
                f"{config}: start {r['startup_s']:.1f} s | c64 {c64['calls_per_s']:.0f}/s "
                f"p50 {c64['p50_ms']:.2f} p99 {c64['p99_ms']:.2f} ms err {c64['errors']} "
                f"client {c64['client_cpu_cores']:.2f} cores | c1 {c1['calls_per_s']:.0f}/s "
                f"p50 {c1['p50_ms']:.3f} p99 {c1['p99_ms']:.3f} ms",
                flush=True,
            )
    best = best_config(results)
    print("best:", Config(*(best[f] for f in Config._fields)))


if __name__ == "__main__":
    main()
