"""The demand panel: every series on one regular grid of periods, as dense arrays.

A `DemandPanel` is what the feature builder, the trainer and the model read; the files'
readers (`engine.forecast.inputs`) are the only way one is made from user data, so every
validation rule lives there once.

Layout: `values[i, t]` is series i's demand in period t (`origin + t * step`); NaN outside
the series (before `first[i]`, after `last[i]`) and, under `--missing nan`, for a period
missing inside it. A series with no demand yet (known only from the static file) has
`first[i] == last[i] + 1`, with `last[i]` the panel's last period: its forecast starts where
the others' do. `covariates[i, t, k]` extends past the demand grid by the horizon, since a
forecast needs the covariates of the periods it forecasts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FREQ_STEP = {"D": np.timedelta64(1, "D"), "W": np.timedelta64(7, "D"), "H": np.timedelta64(1, "h")}
"""Period length of each `--freq`."""
SEASON = {"D": 7, "W": 52, "H": 24}
"""The seasonal period m: of seasonal naive, of MASE's scale and of the seasonal lags."""
LONG_SEASON = {"D": 364, "W": 52, "H": 168}
"""A second, longer cycle (yearly for days and weeks, weekly for hours) for one more lag."""


@dataclass
class DemandPanel:
    freq: str
    origin: np.datetime64  # the date of period 0, datetime64[s]
    series_ids: np.ndarray  # str, [n]
    values: np.ndarray  # float64, [n, T]
    first: np.ndarray  # int64, [n]
    last: np.ndarray  # int64, [n]
    covariates: np.ndarray  # float32, [n, Tc, k], Tc >= T
    covariate_names: tuple[str, ...]
    static: np.ndarray  # float32, [n, s]: numbers, or category codes (NaN unknown)
    static_names: tuple[str, ...]
    encoding: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Categories of each categorical column (covariate or static): a value's code is its
    index. Made at training; at prediction the model's own is used, so codes mean the same."""
    notes: list[str] = field(default_factory=list)

    @property
    def n_series(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_periods(self) -> int:
        return int(self.values.shape[1])

    @property
    def step(self) -> np.timedelta64:
        return FREQ_STEP[self.freq]

    def dates(self, index: np.ndarray) -> np.ndarray:
        """The dates (datetime64[s]) of period indices."""
        return self.origin + np.asarray(index, dtype=np.int64) * self.step.astype("m8[s]")

    def row_of(self, series_ids: list[str] | np.ndarray) -> np.ndarray:
        """Panel rows of `series_ids`; -1 where a series is unknown."""
        ids = np.asarray(series_ids, dtype=self.series_ids.dtype)
        pos = np.searchsorted(self.series_ids, ids)
        pos = np.minimum(pos, len(self.series_ids) - 1)
        found = self.series_ids[pos] == ids
        return np.where(found, pos, -1).astype(np.int64)

    def tail(self, periods: int, horizon: int) -> DemandPanel:
        """The last `periods` of the history and `horizon` periods of covariates after it:
        what a model keeps to forecast from."""
        start = max(0, self.n_periods - periods)
        end = self.n_periods + horizon
        cov = self.covariates[:, start:end]
        if cov.shape[1] < end - start:
            pad = np.full((cov.shape[0], end - start - cov.shape[1], cov.shape[2]), np.nan)
            cov = np.concatenate([cov, pad.astype(np.float32)], axis=1)
        return DemandPanel(
            self.freq,
            self.origin + np.timedelta64(start, "s") * int(self.step / np.timedelta64(1, "s")),
            self.series_ids,
            self.values[:, start:],
            np.maximum(self.first - start, 0) if start else self.first.copy(),
            self.last - start,
            np.ascontiguousarray(cov),
            self.covariate_names,
            self.static,
            self.static_names,
            dict(self.encoding),
        )

    def history_length(self) -> np.ndarray:
        """Periods each series has been observed over (0 for a new one)."""
        return np.asarray(self.last - self.first + 1)

    def cut(self, t0: int) -> DemandPanel:
        """The panel as known at the end of period `t0`: later demand dropped; a series
        starting after `t0` becomes a new one (no history, forecast from `t0` on). The
        covariates stay whole: they are known in advance."""
        last = np.minimum(self.last, t0)
        first = np.minimum(self.first, t0 + 1)
        return DemandPanel(
            self.freq,
            self.origin,
            self.series_ids,
            self.values[:, : t0 + 1].copy(),
            first,
            last,
            self.covariates,
            self.covariate_names,
            self.static,
            self.static_names,
            dict(self.encoding),
        )
