"""`ordersight.v1.Forecasting`: demand quantiles from the served forecast model, and swapping
that model under load the way ModelAdmin swaps the risk models.

A forecast runs on the service's own thread (onnxruntime over every requested series at
once, `engine.forecast.model.ForecastModel.forecast`), so the event loop keeps taking Score
calls meanwhile. A load runs on another thread: `ForecastModel.load` verifies the folder
(manifest, every file's checksum) and opens its sessions, one forecast warms them, and the
model is swapped in with one assignment on the event loop. A call takes the model once, so
no answer mixes two versions; the previous model is kept for `RollbackForecastModel`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from ordersight.v1 import risk_pb2 as pb
from prometheus_client import CollectorRegistry, Counter, Gauge

from engine.codec.alert_messages import timestamp
from engine.errors import DeadlineExceeded, InvalidInput, ModelLoadError, NotFound
from engine.serving.methods import parse_request

if TYPE_CHECKING:
    from engine.forecast.model import ForecastModel

log = logging.getLogger(__name__)
SERVICE = pb.DESCRIPTOR.services_by_name["Forecasting"].full_name
Unary = Callable[[bytes | bytearray, "float | None"], Awaitable[bytes]]
MAX_SERIES = 10_000  # series in one Forecast call: bounds one call's memory and time


def _load(path: Path) -> ForecastModel:
    """A verified, warmed model (ModelLoadError naming what is wrong)."""
    from engine.forecast.model import ForecastModel

    model = ForecastModel.load(path)
    if len(model.series_ids):
        try:
            model.forecast([str(model.series_ids[0])], 1)  # sessions and kernels warm
        except Exception as exc:  # a model that cannot forecast is refused, not served
            raise ModelLoadError(f"{path}: the model fails its first forecast: {exc}") from exc
    return model


class ForecastService:
    def __init__(
        self,
        models: str | Path,
        registry_root: str | Path,
        metrics: CollectorRegistry,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.configured = Path(models) if models else None
        self.registry = Path(registry_root) if registry_root else None
        self.wall = wall
        self.model: ForecastModel | None = None
        self.previous: ForecastModel | None = None
        self.since = 0.0
        self.swaps = 0
        self.error = ""  # why the configured model did not load ("" when it did)
        self._lock: asyncio.Lock | None = None
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="forecast-load")
        self._runner = ThreadPoolExecutor(1, thread_name_prefix="forecast")
        self.info = Gauge(
            "ordersight_forecast_model_info", "The forecast model serving (1)", ["version"],
            registry=metrics,
        )  # fmt: skip
        self.m_swaps = Counter(
            "ordersight_forecast_model_swaps", "Forecast models swapped in", registry=metrics
        )
        self.m_series = Counter(
            "ordersight_forecast_series", "Series forecast (one per series per call)",
            registry=metrics,
        )  # fmt: skip
        if self.configured is not None:
            try:
                self._install(_load(self.configured), swap=False)
            except ModelLoadError as exc:
                self.error = str(exc)
                log.error("forecast model not loaded: %s", exc)
        self.unary: dict[str, Unary] = {
            f"{SERVICE}/Forecast": self._forecast,
            f"{SERVICE}/GetForecastModel": self._get,
            f"{SERVICE}/LoadForecastModel": self._load_model,
            f"{SERVICE}/RollbackForecastModel": self._rollback,
        }

    @property
    def configured_any(self) -> bool:
        return self.configured is not None or self.registry is not None

    def problem(self) -> str:
        """The health component's problem ("" while a model serves)."""
        return "" if self.model is not None else self.error or "no forecast model loaded"

    def close(self) -> None:
        self._loader.shutdown(wait=False, cancel_futures=True)
        self._runner.shutdown(wait=False, cancel_futures=True)

    def _install(self, model: ForecastModel, swap: bool = True) -> None:
        """Serve `model`; the one serving is kept for rollback. `swap`: counted as a swap
        (the model configured at start-up is not)."""
        if self.model is not None:
            self.info.labels(self.model.version).set(0)
        self.previous, self.model = self.model, model
        self.info.labels(model.version).set(1)
        self.since = self.wall()
        if swap:
            self.swaps += 1
            self.m_swaps.inc()
        self.error = ""

    def _locked(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def status(self) -> pb.ForecastModelStatus:
        m = self.model
        out = pb.ForecastModelStatus(swaps=self.swaps)
        if m is None:
            return out
        out.version, out.path = m.version, str(m.path)
        out.loaded_since.CopyFrom(timestamp(self.since))
        out.previous = self.previous.version if self.previous is not None else ""
        out.horizon, out.freq = m.horizon, m.freq
        out.quantiles.extend(m.quantiles)
        out.series = len(m.series_ids)
        return out

    async def _forecast(self, request: bytes | bytearray, deadline: float | None) -> bytes:
        req = parse_request(pb.ForecastRequest, request)
        model = self.model  # one model for the whole call
        if model is None:
            raise ModelLoadError(f"no forecast model loaded ({self.problem()})")
        ids = list(req.series_ids)
        if not ids:
            raise InvalidInput("series_ids: at least one series is needed", "series_ids")
        if len(ids) > MAX_SERIES:
            raise InvalidInput(
                f"series_ids: at most {MAX_SERIES} series per call, got {len(ids)}", "series_ids"
            )
        horizon = int(req.horizon) or model.horizon
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(self._runner, model.forecast, ids, horizon)
        if deadline is None:
            fc = await work
        else:
            try:
                fc = await asyncio.wait_for(work, max(deadline - time.monotonic(), 0.0))
            except TimeoutError as exc:
                raise DeadlineExceeded("the forecast did not finish before the deadline") from exc
        self.m_series.inc(len(ids))
        return _response(model.version, fc).SerializeToString()

    async def _get(self, request: bytes | bytearray, deadline: float | None) -> bytes:
        parse_request(pb.GetForecastModelRequest, request)
        return self.status().SerializeToString()

    def _target(self, req: pb.LoadModelRequest) -> Path:
        which = req.WhichOneof("target")
        if which == "path":
            return Path(req.path)
        if which != "version" or not req.version:
            raise InvalidInput("give a version or a path", "target")
        if self.registry is None:
            raise ModelLoadError("no forecast registry: load by path")
        if not self.registry.is_dir():
            raise ModelLoadError(f"forecast registry {self.registry} is not a directory")
        folder = self.registry / req.version
        if req.version not in (".", "..") and "/" not in req.version and folder.is_dir():
            return folder
        for sub in sorted(p for p in self.registry.iterdir() if p.is_dir()):
            if _manifest_version(sub) == req.version:
                return sub
        raise NotFound(f"no forecast model version {req.version!r} in {self.registry}")

    async def _load_model(self, request: bytes | bytearray, deadline: float | None) -> bytes:
        path = self._target(parse_request(pb.LoadModelRequest, request))
        async with self._locked():
            loop = asyncio.get_running_loop()
            try:
                model = await loop.run_in_executor(self._loader, _load, path)
            except ModelLoadError as exc:
                raise ModelLoadError(f"forecast model refused: {exc}") from exc
            self._install(model)
            log.info("forecast model %s from %s serving", model.version, path)
        return self.status().SerializeToString()

    async def _rollback(self, request: bytes | bytearray, deadline: float | None) -> bytes:
        parse_request(pb.RollbackRequest, request)
        async with self._locked():
            if self.previous is None:
                raise ModelLoadError("no previous forecast model to roll back to")
            self._install(self.previous)
        return self.status().SerializeToString()


def _manifest_version(folder: Path) -> str:
    import json

    try:
        return str(json.loads((folder / "manifest.json").read_text()).get("version", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def _response(version: str, fc) -> pb.ForecastResponse:
    out = pb.ForecastResponse(model_version=version, quantiles=list(fc.quantiles))
    seconds = fc.dates.astype("datetime64[s]").astype(np.int64)
    values = np.asarray(fc.values, dtype=np.float64)
    for i, sid in enumerate(fc.series_ids.tolist()):
        s = out.series.add(series_id=str(sid))
        for h in range(values.shape[1]):
            p = s.periods.add()
            p.period_start.seconds = int(seconds[i, h])
            p.values.extend(values[i, h].tolist())
    return out
