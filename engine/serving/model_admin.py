"""`ordersight.v1.ModelAdmin`: which model version serves, and swapping it under load.

A load runs beside the champion on its own thread, so Score goes on: `artifacts.load`
verifies the folder (checksums, feature schema, tier two's parity sample), and a version
that would serve with a tier missing is refused with the reason. The candidate is then warmed
on a scratch state (Numba kernels, the onnxruntime session, TreeSHAP tables, one batch of
each path) and swapped in with one assignment on the event loop. Every micro-batch reads the
engine's models once, and a ScoreBatch call takes them once for all its chunks, so no batch
mixes two versions. The velocity state is the engine's and carries over: every version this
engine can load computes the same features (`read_manifest` refuses another schema).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ordersight.v1 import risk_pb2 as pb
from prometheus_client import CollectorRegistry, Counter, Gauge

from engine.codec.alert_messages import timestamp
from engine.decision.cascade import Engine
from engine.errors import DeadlineExceeded, InvalidInput, ModelLoadError, NotFound, OrderSightError
from engine.models import artifacts, registry
from engine.models.artifacts import ModelSet
from engine.serving.methods import parse_request
from engine.serving.shadow import Shadow

log = logging.getLogger(__name__)
SERVICE = pb.DESCRIPTOR.services_by_name["ModelAdmin"].full_name
Unary = Callable[[bytes | bytearray, "float | None"], Awaitable[bytes]]


class ModelAdmin:
    def __init__(
        self,
        engine: Engine,
        champion_path: str | Path,
        registry_root: str | Path,
        metrics: CollectorRegistry,
        shadow: Shadow,
        policy_overrides: dict[str, Any] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.shadow = shadow
        self.challenger_path: Path | None = None
        self.registry = Path(registry_root)
        self.policy_overrides = policy_overrides or None
        self.wall = wall
        self.path = self.configured = Path(champion_path)
        self.since = wall()
        self.previous: tuple[ModelSet, Any, Path] | None = None  # models, cost, folder
        self.swaps = 0
        self._lock: asyncio.Lock | None = None
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="model-load")
        self.info = Gauge(
            "ordersight_model_info", "The model version serving (1) and the one Rollback "
            "returns to (0)", ["version", "role"], registry=metrics,
        )  # fmt: skip
        self.swapped = Counter(
            "ordersight_model_swaps", "Model versions swapped in (loads and rollbacks)",
            registry=metrics,
        )  # fmt: skip
        self.refused = Counter(
            "ordersight_model_load_failures", "Model loads refused", registry=metrics
        )
        Gauge(
            "ordersight_model_loaded_since_seconds", "When the champion was swapped in (epoch s)",
            registry=metrics,
        ).set_function(lambda: self.since)  # fmt: skip
        self._show()
        self.unary: dict[str, Unary] = {
            f"{SERVICE}/ListModels": self._list_models,
            f"{SERVICE}/GetStatus": self._get_status,
            f"{SERVICE}/LoadModel": self._load_model,
            f"{SERVICE}/Rollback": self._rollback,
            f"{SERVICE}/SetChallenger": self._set_challenger,
            f"{SERVICE}/ClearChallenger": self._clear_challenger,
        }

    def close(self) -> None:
        self._loader.shutdown(wait=True)

    def _show(self) -> None:
        self.info.clear()
        self.info.labels(self.engine.models.version, "champion").set(1)
        if self.previous is not None:
            self.info.labels(self.previous[0].version, "previous").set(0)
        if self.shadow.models is not None:
            self.info.labels(self.shadow.models.version, "challenger").set(0)

    # --- what the methods do ---------------------------------------------------------------

    async def load(self, path: Path, deadline: float | None = None) -> pb.ModelStatus:
        """Verify, warm and swap in the version at `path`; the champion serves meanwhile
        and goes on serving if the load fails (ModelLoadError, NotFound) or the call's
        `deadline` (monotonic seconds) passes first (DeadlineExceeded: nothing swapped, so
        a caller that gave up is never surprised). Returns the status it left."""
        async with self._locked():  # one load at a time
            loop = asyncio.get_running_loop()
            try:
                models, cost = await loop.run_in_executor(self._loader, self._prepare, path)
                if deadline is not None and time.monotonic() > deadline:
                    raise DeadlineExceeded(
                        f"{path}: verified, but the call's deadline passed first: not swapped"
                    )
            except OrderSightError as exc:
                self._refused(path, exc)
                raise
            self._swap(models, cost, path)
            return self.status()

    async def reload(self) -> None:
        """Load what the configured models path holds now (SIGHUP): a deployment that
        pushes files repoints a `models/current` link and signals. A refusal is logged and
        counted; the champion goes on serving."""
        log.info("reloading %s (now %s)", self.configured, self.configured.resolve())
        with contextlib.suppress(OrderSightError):
            await self.load(self.configured)

    def _refused(self, what: Path | str, exc: BaseException) -> None:
        self.refused.inc()
        log.error("model load from %s refused: %s", what, exc)

    def _locked(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def _prepare(self, path: Path) -> tuple[ModelSet, Any]:
        if not path.is_dir():
            raise NotFound(f"{path}: no such model folder")
        try:
            models = artifacts.load(path, self.policy_overrides)
            if models.problems:
                raise ModelLoadError(f"{path}: {'; '.join(models.problems)}")
            return models, self.engine.warm_models(models)
        except OrderSightError:
            raise
        except Exception as exc:  # a manifest or model this engine cannot run, whatever broke
            raise ModelLoadError(f"{path}: {type(exc).__name__}: {exc}") from exc

    def _swap(self, models: ModelSet, cost: Any, path: Path) -> None:
        old = (self.engine.models, self.engine.cost, self.path)
        self.engine.swap(models, cost)  # the next micro-batch is the new version's
        self.previous, self.path, self.since = old, path, self.wall()
        self.swaps += 1
        self.swapped.inc()
        self._show()
        log.info("model %s from %s serving (was %s)", models.version, path, old[0].version)

    async def rollback(self) -> pb.ModelStatus:
        """Back to the previous champion (one level: rolling back twice returns to where it
        started); refused when there is none, or when it served with a tier missing."""
        async with self._locked():
            if self.previous is None:
                raise ModelLoadError("no previous model version to roll back to")
            models, cost, path = self.previous
            if models.problems:
                raise ModelLoadError(
                    f"the previous version {models.version} served with problems "
                    f"({'; '.join(models.problems)}): load a whole version instead"
                )
            self._swap(models, cost, path)
            return self.status()

    async def set_challenger(self, path: Path) -> pb.ModelStatus:
        """Verify and warm the version at `path` as for a load, then shadow the champion
        with it (replacing any challenger). The champion is not touched."""
        async with self._locked():
            loop = asyncio.get_running_loop()
            try:
                models, _ = await loop.run_in_executor(self._loader, self._prepare, path)
            except OrderSightError as exc:
                self._refused(path, exc)
                raise
            self.shadow.set(models)
            self.challenger_path = path
            self._show()
            log.info("challenger %s from %s in shadow", models.version, path)
            return self.status()

    def clear_challenger(self) -> pb.ModelStatus:
        self.shadow.set(None)
        self.challenger_path = None
        self._show()
        return self.status()

    def status(self) -> pb.ModelStatus:
        m = self.engine.models
        state = self.engine.state
        shadow = self.shadow
        return pb.ModelStatus(
            challenger=shadow.models.version if shadow.models is not None else "",
            challenger_decisions=shadow.decided,
            challenger_dropped=shadow.dropped,
            challenger_agreement=shadow.agreement,
            champion=m.version,
            champion_path=str(self.path),
            loaded_since=timestamp(self.since),
            parity_max_error=m.parity_max_error,
            problems=m.problems,
            previous=self.previous[0].version if self.previous else "",
            swaps=self.swaps,
            state_bytes=state.nbytes,
            state_orders=self.engine.orders_seen,
        )

    def versions(self) -> pb.ListModelsResponse:
        champion = self.path.resolve()
        previous = self.previous[2].resolve() if self.previous else None
        out = pb.ListModelsResponse(registry=str(self.registry))
        for e in registry.list_versions(self.registry):
            v = out.models.add(
                version=e.version, path=str(e.path), champion=e.path.resolve() == champion,
                previous=e.path.resolve() == previous, tier2_auc=e.tier2_auc,
                tier2_average_precision=e.tier2_average_precision, problem=e.problem,
            )  # fmt: skip
            with contextlib.suppress(ValueError):  # an unreadable date is left unset
                v.created_at.FromDatetime(dt.datetime.fromisoformat(e.created_at))
        return out

    # --- bytes in, bytes out ---------------------------------------------------------------

    async def _list_models(self, request: bytes | bytearray, deadline: float | None) -> bytes:
        parse_request(pb.ListModelsRequest, request)
        return self.versions().SerializeToString()

    async def _get_status(self, request: bytes | bytearray, deadline: float | None) -> bytes:
        parse_request(pb.GetModelStatusRequest, request)
        return self.status().SerializeToString()

    async def _load_model(self, request: bytes | bytearray, deadline: float | None) -> bytes:
        path = self._target(parse_request(pb.LoadModelRequest, request))
        return (await self.load(path, deadline)).SerializeToString()

    async def _set_challenger(self, request: bytes | bytearray, deadline: float | None) -> bytes:
        path = self._target(parse_request(pb.LoadModelRequest, request))
        return (await self.set_challenger(path)).SerializeToString()

    async def _clear_challenger(self, request: bytes | bytearray, deadline: float | None) -> bytes:
        parse_request(pb.ClearChallengerRequest, request)
        return self.clear_challenger().SerializeToString()

    def _target(self, req: pb.LoadModelRequest) -> Path:
        """The folder a LoadModelRequest names."""
        target = req.WhichOneof("target")
        if target == "version":
            if not req.version:
                raise InvalidInput("version: must not be empty", "version")
            try:
                path = registry.resolve(self.registry, req.version)
            except OrderSightError as exc:
                self._refused(req.version, exc)
                raise
        elif target == "path":
            if not req.path:
                raise InvalidInput("path: must not be empty", "path")
            path = Path(req.path)
        else:
            raise InvalidInput("target: set either version or path", "target")
        return path

    async def _rollback(self, request: bytes | bytearray, deadline: float | None) -> bytes:
        parse_request(pb.RollbackRequest, request)
        return (await self.rollback()).SerializeToString()
