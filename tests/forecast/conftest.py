"""A small simulated demand world and a real model trained on it, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.forecast import ForecastModel
from engine.forecast.fit import FitOptions, parse_quantiles, train
from engine.forecast.inputs import build_panel
from engine.forecast.panel import DemandPanel
from training.demand_sim import DemandSim, simulate_demand, write_demand

HORIZON = 14
SMALL = FitOptions(rows_per_series=60, rounds=30, progress=False)


@pytest.fixture(scope="session")
def sim() -> DemandSim:
    return simulate_demand(40, 240, seed=5, horizon=HORIZON)


@pytest.fixture(scope="session")
def sim_files(sim: DemandSim, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_demand(sim, tmp_path_factory.mktemp("demand"))


@pytest.fixture(scope="session")
def panel(sim: DemandSim) -> DemandPanel:
    return build_panel(sim.demand, horizon=HORIZON, covariates=sim.covariates, static=sim.static)


@pytest.fixture(scope="session")
def model_dir(panel: DemandPanel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("forecast") / "m"
    levels, labels = parse_quantiles("0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9")
    train(panel, out, HORIZON, levels, labels, SMALL)
    return out


@pytest.fixture(scope="session")
def model(model_dir: Path) -> ForecastModel:
    return ForecastModel.load(model_dir)
