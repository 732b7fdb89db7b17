"""A trained forecast model folder, loaded once and asked for quantiles many times.

`ForecastModel.load(dir)` verifies the manifest and the sha256 of every file it names
(`ModelLoadError` on any mismatch), opens one onnxruntime session per booster and builds the
kept history's cumulative sums; after that `forecast(series_ids, horizon)` is a few NumPy
gathers and one `session.run` per quantile (per horizon bucket) over all requested rows.

Quantiles: each booster's output (scaled units) plus its conformal shift for the row's
horizon bucket, sorted across quantiles (monotone rearrangement: sorting cannot worsen any
quantile's pinball loss and makes crossing impossible), times the row's scale, and clipped
at zero when the training demand had no negative value.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from engine.checksums import sha256
from engine.errors import InvalidInput, ModelLoadError, NotFound
from engine.forecast.features import FeatureSpec, PanelStats, build_rows, panel_stats, scales
from engine.forecast.panel import FREQ_STEP, DemandPanel

MANIFEST = "manifest.json"
STATE = "state.npz"
KIND = "ordersight-forecast"


class Forecast(NamedTuple):
    series_ids: np.ndarray  # str [n]
    dates: np.ndarray  # datetime64[s] [n, H]: the H periods after each series' last
    values: np.ndarray  # float64 [n, H, Q], non-decreasing along Q
    quantiles: tuple[float, ...]
    labels: tuple[str, ...]  # column names: "q" + label


@dataclass
class Booster:
    name: str  # file stem: q0.1, q0.1_b0, lt0.95
    level: float
    bucket: int  # -1: all horizons
    session: Any


def save_state(panel: DemandPanel, path: Path) -> None:
    np.savez_compressed(
        path,
        series_ids=panel.series_ids.astype(str),
        origin=np.array([panel.origin.astype("int64")]),
        values=panel.values,
        first=panel.first,
        last=panel.last,
        covariates=panel.covariates,
        static=panel.static,
    )


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class ForecastModel:
    def __init__(
        self, path: Path, manifest: dict[str, Any], boosters: list[Booster], state: DemandPanel
    ) -> None:
        self.path = path
        self.manifest = manifest
        self.freq: str = manifest["freq"]
        self.horizon: int = int(manifest["horizon"])
        self.quantiles = tuple(float(q) for q in manifest["quantiles"])
        self.labels = tuple(manifest["quantile_labels"])
        self.version: str = manifest["version"]
        self.spec = FeatureSpec(
            self.freq,
            tuple(manifest["covariate_names"]),
            tuple(manifest["static_names"]),
            frozenset(manifest["encoding"]),
        )
        self.encoding = {k: tuple(v) for k, v in manifest["encoding"].items()}
        self.buckets: list[tuple[int, int]] = [tuple(b) for b in manifest["buckets"]]  # type: ignore[misc]
        self.shifts = {float(k): np.array(v) for k, v in manifest["shifts"].items()}
        self.lt_levels = tuple(float(q) for q in manifest["lead_time"]["levels"])
        self.lt_shifts = np.array(manifest["lead_time"]["shifts"], dtype=np.float64)
        self.groups = {
            c: {float(k): float(v) for k, v in t} for c, t in manifest["prior"]["effects"].items()
        }
        self.overall = float(manifest["prior"]["overall"])
        self.floor = float(manifest["scale_floor"])
        self.nonnegative = bool(manifest["nonnegative"])
        self._quantile = [b for b in boosters if b.name.startswith("q")]
        self._lead = [b for b in boosters if b.name.startswith("lt")]
        self.state = state
        self._stats = panel_stats(state)
        self._prior = self.prior_for(state)

    @classmethod
    def load(cls, path: str | Path, threads: int = 1) -> ForecastModel:
        """Verify and open a model folder; raises ModelLoadError, never a half-made model."""
        path = Path(path)
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"{path}: no readable {MANIFEST}: {exc}") from exc
        if not isinstance(manifest, dict) or manifest.get("kind") != KIND:
            raise ModelLoadError(f"{path}: {MANIFEST} is not a forecast model's ({KIND})")
        files = manifest.get("files")
        if not isinstance(files, dict) or not files:
            raise ModelLoadError(f"{path}: {MANIFEST} names no files with their checksums")
        for name, digest in files.items():
            f = path / name
            if not f.is_file():
                raise ModelLoadError(f"{path}: {name} is missing")
            if sha256(f) != digest:
                raise ModelLoadError(f"{path}: {name} does not match its checksum")
        try:
            boosters = [
                Booster(
                    b["name"],
                    float(b["level"]),
                    int(b["bucket"]),
                    _session(path / f"{b['name']}.onnx", threads),
                )
                for b in manifest["boosters"]
            ]
            with np.load(path / STATE, allow_pickle=False) as z:
                state = DemandPanel(
                    manifest["freq"],
                    np.datetime64(int(z["origin"][0]), "s"),
                    z["series_ids"],
                    z["values"],
                    z["first"],
                    z["last"],
                    z["covariates"],
                    tuple(manifest["covariate_names"]),
                    z["static"],
                    tuple(manifest["static_names"]),
                    {k: tuple(v) for k, v in manifest["encoding"].items()},
                )
            return cls(path, manifest, boosters, state)
        except Exception as exc:  # onnxruntime, numpy and a manifest lacking a key
            why = f"manifest lacks {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ModelLoadError(f"{path}: cannot open the model: {why}") from exc

    @property
    def series_ids(self) -> np.ndarray:
        """The series the kept history holds (what `forecast` answers for)."""
        return self.state.series_ids

    def prior_for(self, panel: DemandPanel) -> np.ndarray:
        from engine.forecast.features import prior_scales

        return prior_scales(panel, self.groups, self.overall)

    def _check_horizon(self, horizon: int) -> None:
        if not 1 <= horizon <= self.horizon:
            raise InvalidInput(
                f"horizon must be in 1..{self.horizon} (the model's), is {horizon}", "horizon"
            )

    def forecast(self, series_ids: Sequence[str], horizon: int) -> Forecast:
        """Quantiles for the `horizon` periods after each series' last period in the kept
        history, in the order asked. An unknown series is NotFound (naming it)."""
        self._check_horizon(horizon)
        rows = self.state.row_of(list(series_ids))
        if (rows < 0).any():
            bad = list(series_ids)[int(np.flatnonzero(rows < 0)[0])]
            raise NotFound(f"series_id {bad!r} is not in the model's history")
        return self._predict(self.state, self._stats, self._prior, rows, horizon)

    def predict(self, panel: DemandPanel, horizon: int | None = None) -> Forecast:
        """Quantiles for every series of `panel` (made with this model's encoding and columns,
        see `inputs.build_panel`), from each series' last period on."""
        horizon = self.horizon if horizon is None else horizon
        self._check_horizon(horizon)
        self._check_panel(panel)
        rows = np.arange(panel.n_series)
        return self._predict(panel, panel_stats(panel), self.prior_for(panel), rows, horizon)

    def _check_panel(self, panel: DemandPanel) -> None:
        if panel.freq != self.freq:
            raise InvalidInput(f"--freq {panel.freq}: the model was trained on {self.freq}", "freq")

    def _bucket_of(self, h: np.ndarray) -> np.ndarray:
        b = np.zeros(len(h), dtype=np.int64)
        for k, (lo, _hi) in enumerate(self.buckets):
            b[h >= lo] = k
        return b

    def _run(self, boosters: list[Booster], X: np.ndarray, bucket: np.ndarray) -> np.ndarray:
        """[rows, len(levels)] raw outputs: one session.run per booster over its rows."""
        levels = sorted({b.level for b in boosters})
        out = np.empty((len(X), len(levels)))
        for b in boosters:
            col = levels.index(b.level)
            if b.bucket < 0:
                out[:, col] = b.session.run(None, {"x": X})[0].ravel()
            else:
                sel = bucket == b.bucket
                if sel.any():
                    out[sel, col] = b.session.run(None, {"x": X[sel]})[0].ravel()
        return out

    def _predict(
        self,
        panel: DemandPanel,
        stats: PanelStats,
        prior: np.ndarray,
        rows: np.ndarray,
        horizon: int,
    ) -> Forecast:
        n = len(rows)
        i = np.repeat(rows, horizon)
        t = panel.last[i]
        h = np.tile(np.arange(1, horizon + 1), n)
        s = scales(panel, stats, i, t, prior, self.floor)
        X = build_rows(self.spec, panel, stats, i, t, h, s)
        bucket = self._bucket_of(h)
        raw = self._run(self._quantile, X, bucket)
        shift = np.stack([self.shifts[q][bucket] for q in self.quantiles], axis=1)
        q = np.sort(raw + shift, axis=1) * s[:, None]
        if self.nonnegative:
            q = np.maximum(q, 0.0)
        dates = panel.dates(t + h).reshape(n, horizon)
        return Forecast(
            panel.series_ids[rows], dates, q.reshape(n, horizon, -1), self.quantiles, self.labels
        )

    def lead_time_periods(self, days: float) -> int:
        """Lead time in days as whole periods of the model's frequency (rounded up)."""
        per = FREQ_STEP[self.freq] / np.timedelta64(1, "D")
        periods = int(np.ceil(days / per - 1e-9))
        if days <= 0 or periods > self.horizon:
            raise InvalidInput(
                f"--lead-time must be > 0 and at most the horizon "
                f"({self.horizon * per:g} days), is {days:g}",
                "lead_time",
            )
        return periods

    def reorder_points(
        self,
        panel: DemandPanel | None,
        service_level: float,
        lead_periods: int,
        series_ids: Sequence[str] | None = None,
    ) -> np.ndarray:
        """The `service_level` quantile of demand summed over the next `lead_periods`, per
        series (of `panel`, or of the kept history for `series_ids`): from the direct
        cumulative-demand quantile models, interpolated linearly between their levels."""
        lo, hi = self.lt_levels[0], self.lt_levels[-1]
        if not lo <= service_level <= hi:
            raise InvalidInput(
                f"--service-level must be in [{lo}, {hi}] (the levels the "
                f"lead-time model was trained for), is {service_level}",
                "service_level",
            )
        if panel is None:
            panel, stats, prior = self.state, self._stats, self._prior
            rows = self.state.row_of(
                list(self.state.series_ids if series_ids is None else series_ids)
            )
            if (rows < 0).any():
                raise NotFound("a series_id is not in the model's history")
        else:
            self._check_panel(panel)
            stats, prior, rows = (
                panel_stats(panel),
                self.prior_for(panel),
                np.arange(panel.n_series),
            )
        t = panel.last[rows]
        h = np.full(len(rows), lead_periods)
        s = scales(panel, stats, rows, t, prior, self.floor)
        X = build_rows(self.spec, panel, stats, rows, t, h, s)
        raw = self._run(self._lead, X, np.zeros(len(rows), dtype=np.int64))
        q = np.sort(raw + self.lt_shifts[None, :], axis=1) * (s * lead_periods)[:, None]
        point = np.array([np.interp(service_level, self.lt_levels, row) for row in q])
        return np.maximum(point, 0.0) if self.nonnegative else point
