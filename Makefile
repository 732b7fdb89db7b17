# OrderSight. `make run` and `make test` set up everything they need on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTO := proto/ordersight/v1/risk.proto
PROTO_PY := proto/ordersight/v1/risk_pb2.py
MODELS ?= models/default
HISTORY ?= models/default-history.parquet
SIM_DAYS ?= 56
FORECAST ?= models/forecast/default
DEMAND ?= models/demand
ROUTING ?= models/routing/default
CASES ?= models/routing-cases.parquet
PORT ?= 50051
METRICS_PORT ?= 9464

.PHONY: install services proto models run test lint format bench bench-micro bench-anomaly bench-series bench-forecast bench-routing pilot-example soak fuzz clean

install: $(STAMP) $(PROTO_PY)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Generated protobuf code comes from this target only; never edit it by hand.
proto: $(PROTO_PY)
$(PROTO_PY): $(PROTO) $(STAMP)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=proto --pyi_out=proto \
		--grpc_python_out=proto $(PROTO)

# Default models: trained from the built-in simulators when $(MODELS), $(FORECAST) or $(ROUTING)
# has none (the risk models, a forecast model over 200 simulated series x 2 years, and the
# routing text model over 6,000 simulated cases in English and German).
models: $(MODELS)/manifest.json $(FORECAST)/manifest.json $(ROUTING)/manifest.json
$(MODELS)/manifest.json: | install
	$(BIN)/ordersight simulate --days $(SIM_DAYS) --out $(HISTORY)
	$(BIN)/ordersight train --orders $(HISTORY) --out $(MODELS)
$(FORECAST)/manifest.json: | install
	$(BIN)/ordersight forecast simulate --series 200 --days 730 --out $(DEMAND)
	$(BIN)/ordersight forecast train --demand $(DEMAND)/demand.parquet \
		--covariates $(DEMAND)/covariates.parquet --static $(DEMAND)/static.parquet \
		--horizon 28 --out $(FORECAST)
$(ROUTING)/manifest.json: | install
	$(BIN)/ordersight route simulate --cases 6000 --out $(CASES)
	$(BIN)/ordersight route train --cases $(CASES) --text-cols subject,body --label-col queue \
		--priority-col priority --out $(ROUTING)

# A local bearer token (roles score, report, admin, forecast, review, route) on first run: its secret in
# .ordersight/token, which the CLI reads; its hash in .ordersight/config.toml, which serve reads.
LOCAL := .ordersight
$(LOCAL)/config.toml: | install
	$(BIN)/ordersight token --name local --roles score,report,admin,forecast,review,route --write $(LOCAL)

# The entity keys' secret (docs/SECURITY.md) on first run: 32 random bytes, owner-only.
$(LOCAL)/hash.secret:
	mkdir -p $(LOCAL)
	umask 077 && head -c 32 /dev/urandom | base64 > $@.tmp && mv $@.tmp $@

run: install models $(LOCAL)/config.toml $(LOCAL)/hash.secret
	@echo "token: $(LOCAL)/token (ordersight score|alerts|models read it; grpcurl: -H \"authorization: Bearer \$$(cat $(LOCAL)/token)\")"
	$(BIN)/ordersight serve --config $(LOCAL)/config.toml --models $(MODELS) --port $(PORT) --warm-from $(HISTORY) \
		--log-dir $(LOCAL)/log --snapshot-dir $(LOCAL)/state --metrics-port $(METRICS_PORT) \
		--hash-secret-file $(LOCAL)/hash.secret --forecast-models $(FORECAST) --store $(LOCAL)/store.db \
		--routing-models $(ROUTING)

# What the tests start or drive themselves (nats-server, PostgreSQL, Chromium), from Debian's packages.
services:
	bash scripts/install-services.sh

test: install services
	$(PY) -m pytest -q

# Side-by-side benchmarks (about 30 minutes); results in benchmarks/results/, nothing committed.
bench: install models services
	$(PY) -m pip install -q -e '.[dev,bench]'
	$(PY) -m benchmarks.run
	$(PY) -m benchmarks.routing_text
	$(PY) -m benchmarks.routing_sim
	$(PY) -m benchmarks.routing_serving

# Anomaly detection: the engine's detector against a static threshold and a 3-sigma band.
bench-anomaly: install
	$(PY) -m benchmarks.anomaly_eval

# Offline detection (`ordersight detect`) on two generated corpora of labelled series against a
# rolling z-score, seasonal ESD and adtk (about 6 minutes); benchmarks/results/series/.
bench-series: install
	$(PY) -m pip install -q -e '.[dev,bench]'
	$(PY) -m benchmarks.series_eval

# Demand forecasting: rolling-origin backtests on two simulated worlds against seasonal naive and
# AutoETS, training time on 1,000 series x 3 years, in-process forecast throughput (about 40
# minutes on two cores); benchmarks/results/forecast/.
bench-forecast: install
	$(PY) -m pip install -q -e '.[dev,bench]'
	$(PY) -m benchmarks.forecast_eval

# Routing (about 9 minutes; benchmarks/results/routing/): the text model's macro-F1 on held-out
# and shifted simulated cases against keyword rules and naive Bayes, and route predict's
# cases/s (text.md); a simulated working week, the engine's router against round-robin,
# skills-only and least-loaded (simulation.md); Route's server CPU and latency beside Score on
# a real server (serving.md).
bench-routing: install models
	$(PY) -m benchmarks.routing_text
	$(PY) -m benchmarks.routing_sim
	$(PY) -m benchmarks.routing_serving

# A simulated pilot of 35 days against a 10% control group, with a challenger in shadow, the
# outcomes fed as they would arrive, and the reports checked against the simulator's truth
# (5-10 minutes): docs/examples/{pilot,accuracy,bias,drift}/ and docs/examples/truth.md.
pilot-example: install services
	$(PY) -m benchmarks.pilot_sim --out docs/examples

# Soak (SOAK_MINUTES of load, about 2 minutes more to start and measure): Score at 70% of the
# measured capacity with new entities all along, outcomes and events mixed in, a hot swap and
# a challenger on the way, the decision log and snapshots on; per-minute p50/p99, RSS of the
# engine and its fronts, calls, rejections and failures in benchmarks/results/soak.md.
SOAK_MINUTES ?= 10
soak: install models
	$(PY) -m benchmarks.soak --minutes $(SOAK_MINUTES)

bench-micro: install models
	$(PY) -m pytest benchmarks/test_micro.py -q --benchmark-only -p no:cacheprovider

# Fuzzing (tests/fuzzing.py): mutated Score / ScoreBatch requests (protobuf orders, and Arrow IPC
# streams, plain, zstd and lz4) sent as raw bytes to a real server in a child process; any status
# but OK / INVALID_ARGUMENT / RESOURCE_EXHAUSTED / ALREADY_EXISTS, a hang or a dead server fails, and the request is
# saved for replay (`python -m tests.fuzzing --replay FILE`). Seeded mutation, not atheris: the
# code under test runs in another process, much of it native (pyarrow's C++, Numba kernels),
# which atheris' Python coverage cannot see, so coverage would guide nothing; what catches a
# segfault there is a seeded mutational fuzzer that watches the process and keeps reproducers.
# `make test` runs a bounded number of cases (tests/test_fuzz.py).
fuzz: install models
	$(PY) -m tests.fuzzing --cases 5000 --models $(MODELS)

lint: install
	$(BIN)/ruff check engine training tests benchmarks
	$(BIN)/ruff format --check engine training tests benchmarks
	$(BIN)/mypy

format: install
	$(BIN)/ruff format engine training tests benchmarks
	$(BIN)/ruff check --fix engine training tests benchmarks

clean:
	rm -rf $(VENV) proto/ordersight/v1/*_pb2*.py* .pytest_cache benchmarks/.venv-mlserver
