"""Settings: one typed class, read from a TOML file, then `ORDERSIGHT_*` environment variables.

Precedence (last wins): defaults, the config file, the environment, command-line flags.
A `[policy]` table in the file overrides the thresholds the models' manifest proposes; a
`[limits]` table overrides the input limits (`engine.orders.rules.Limits`).
The entity-key secret is `hash_secret_file` (a path, preferred: it wins when both are set)
or `hash_secret` (normally $ORDERSIGHT_HASH_SECRET, kept out of the settings' repr).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

ENV_PREFIX = "ORDERSIGHT_"
_TABLES = ("policy", "limits", "tokens")  # given as TOML tables, not environment variables


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    """Address the gRPC server listens on."""
    port: int = 50051
    """Port the gRPC server listens on (0 picks a free one)."""
    models: str = "models/default"
    """Artifact folder with manifest.json; missing or broken parts fall back to rules."""
    registry: str = ""
    """Model registry: the folder whose sub-folders are the versions ModelAdmin lists and
    loads by name ("" = the folder that holds `models`)."""
    forecast_models: str = ""
    """Forecast model folder (`ordersight forecast train --out`) that Forecasting serves
    ("" = none until LoadForecastModel); one that does not load is logged and the
    `ordersight.forecast` health component is NOT_SERVING, risk scoring is unaffected."""
    forecast_registry: str = ""
    """Folder whose sub-folders are forecast model versions LoadForecastModel loads by name
    ("" = the folder that holds `forecast_models`)."""
    control_fraction: float = 0.0
    """The pilot's control group: this share of customers (0 to 0.5; a keyed hash of
    customer_id picks them, the same on every replica and restart) is decided by the rules
    alone, the old method, and logged with fallback cause CONTROL_GROUP; the models decide
    the rest. `ordersight report pilot` compares the two arms (0 = no control group)."""
    allow_rules_only: bool = False
    """Serve with the rule fallback alone when the model folder cannot be used; otherwise
    such a folder stops start-up (a broken tier two alone never does: its rows fall back)."""
    warm_history: str = ""
    """Parquet history replayed into the velocity state at start-up ("" = start empty)."""
    warm_label_delay_days: float = 7.0
    """Label delay for `warm_history` rows without label_known_at."""
    max_request_bytes: int = 128 << 20
    """Largest gRPC request or response, in bytes (a ScoreBatch of 100,000 orders is about
    40 MB); larger requests are refused by gRPC with RESOURCE_EXHAUSTED."""
    alert_bucket_s: float = 300.0
    """Bucket of the operational anomaly detector (orders, declines, errors per channel)."""
    drift_bound: float = 0.2
    """PSI of the served score or a top feature over one hour of orders, against the
    distribution the manifest recorded at training, past which a drift alert opens (it
    resolves after an hour back under the bound)."""
    drift_min_orders: int = 200
    """Orders an hour needs before its PSI may raise a drift alert."""
    metrics_port: int = 0
    """Port of the Prometheus /metrics endpoint on `host` (0 = off)."""
    workers: int = 0
    """gRPC front processes sharing the port (SO_REUSEPORT) in front of the one engine
    process, which owns the models and the velocity state; 0 = one per core."""
    single_process: bool = False
    """Take gRPC calls in the engine's own process (no front processes, `workers` unused)."""
    replication_url: str = ""
    """NATS server (JetStream) through which replicas share accepted orders and outcomes,
    e.g. nats://127.0.0.1:4222 ("" = this engine is alone)."""
    replication_stream: str = "ORDERSIGHT"
    """JetStream stream of the replicas (created if missing)."""
    replica_id: str = ""
    """This replica's name in the stream ("" = host name and process id)."""
    replication_max_age_s: float = 31 * 86400.0
    """How long the stream keeps messages: what a new replica can catch up from (the
    longest velocity window, 30 days, and a day)."""
    replication_decisions: bool = False
    """Also publish every decision to `<stream>.decisions.<replica>` (each message a
    ScoreBatchResponse) for downstream consumers."""
    replication_max_lag_s: float = 1.0
    """Replication lag past which a warning is logged (at most once a minute)."""
    replication_queue_max: int = 100_000
    """Accepted messages waiting to be published while the stream is slow or unreachable;
    past this, new ones are dropped and counted in `ordersight_replication_dropped` (Score
    calls are still answered: the other replicas then miss those orders)."""
    store: str = ""
    """The store of review cases, outcomes and the decisions index: a SQLite file (a path,
    created with its folder if missing; WAL mode, no server) or a PostgreSQL DSN
    (`postgresql://user:password@host/db`, for several replicas sharing one queue). "" = no
    store: REVIEW decisions open no case, outcomes are not deduplicated or kept."""
    store_queue_max: int = 4096
    """Decision entries waiting for the store's writer; past this they are dropped and
    counted (`ordersight_store_dropped`), and caught up from the decision log if there is one."""
    routing_models: str = ""
    """Folder of the routing text model (`ordersight route train --text-cols subject,body`)
    that reads a routed case's category from its text ("" = none: Route then needs the
    case's category, or a review_order_id). Routing needs `store`. A folder that does not
    load (checksums, parity) stops the engine from starting, naming what is wrong."""
    routing_open_max: int = 100_000
    """Routed cases open (queued or assigned) at once; past this, Route is RESOURCE_EXHAUSTED."""
    store_decisions_days: float = 180.0
    """How long the store's decisions index (what outcomes are matched against) keeps a
    decision, in days of wall time."""
    snapshot_dir: str = ""
    """Folder of the velocity state's snapshot ("" = none): loaded at start-up instead of
    `warm_history` when it exists, written every `snapshot_every_s` and at a graceful stop."""
    snapshot_every_s: float = 300.0
    """Seconds between snapshots while serving (0 = only at a graceful stop)."""
    log_dir: str = ""
    """Folder of the decision log, rotated Arrow IPC segments of every decision, outcome
    and event ("" = no log). With `snapshot_dir`, a restart replays the entries logged
    after the snapshot."""
    log_durability: str = "fsync"
    """When a call is answered: "fsync" once its decision is on disk (one group commit per
    micro-batch); "batched" at once, the log fsync'ed every `log_flush_ms` (a crash loses
    at most what was not yet written, a power loss the last `log_flush_ms`); "off" never
    fsync'ed (benchmarks)."""
    log_flush_ms: float = 100.0
    """Interval of the "batched" mode's fsync."""
    log_segment_bytes: int = 64 << 20
    """A segment is closed and a new one started past this size..."""
    log_segment_s: float = 3600.0
    """...or this age."""
    log_retention_s: float = 7 * 86400.0
    """Closed segments older than this are removed (0 = kept), except those a restart
    still needs (written after the last snapshot)."""
    log_retention_bytes: int = 0
    """The oldest closed segments are removed while the log is larger (0 = no limit), with
    the same exception."""
    log_queue_max: int = 4096
    """Entries waiting for the log's writer; past this the engine waits for the disk."""
    log_on_failure: str = "fail_closed"
    """When the decision log cannot be written (a full or unwritable disk): "fail_closed"
    refuses every call that changes state with UNAVAILABLE until a write succeeds again (no
    decision goes unlogged); "fail_open" keeps deciding, counts the rows it could not write
    (`ordersight_log_lost_rows`) and raises a critical alert."""
    health_report_s: float = 60.0
    """While a component is down, how often a log line says which and why."""
    tls_cert: str = ""
    """PEM certificate (chain) of the gRPC and metrics ports ("" = no TLS, plaintext)."""
    tls_key: str = ""
    """PEM private key of `tls_cert`."""
    tls_client_ca: str = ""
    """PEM CA bundle that client certificates must chain to: mutual TLS, every client must
    present one ("" = clients are not asked for a certificate). A client certificate whose
    subject carries organizational units named after roles (OU=score, OU=report, OU=admin)
    grants those roles without a token; with mutual TLS every call is checked, tokens or
    not. Use a CA of your own for clients: whoever it signs an OU for holds that role."""
    reflection: str = "auto"
    """gRPC server reflection: "on", "off", or "auto" (on without TLS, off with it)."""
    replication_queue_max_bytes: int = 256 << 20
    """The same bound in bytes: a ScoreBatch message can be a megabyte."""
    engine_thread: bool = True
    """Score on a dedicated thread, so the event loop keeps taking calls (and micro-batches
    form) while a batch is scored; Numba and onnxruntime release the GIL. False scores on
    the event loop itself: lower latency for a lone caller, no batching under load."""
    max_batch: int = 256
    """Most orders scored in one micro-batch."""
    max_queue: int = 0
    """Score calls waiting for the engine past which new ones are refused at once with
    RESOURCE_EXHAUSTED (0 = sized from the measured service time: what the engine can score
    within `max_queue_ms`, at least `max_batch`)."""
    max_queue_ms: float = 50.0
    """The queue bound's target wait when `max_queue` is 0."""
    max_in_flight: int = 2048
    """Calls each front process takes at once; past this gRPC refuses new ones with
    RESOURCE_EXHAUSTED (0 = no limit)."""
    idempotency_window_s: float = 86400.0
    """How long a Score call's answer is kept by order id: a retry of the same order within
    this gets it again, not counted twice; another order under that id is refused with
    ALREADY_EXISTS (0 = off; see engine.serving.retries)."""
    idempotency_max: int = 200_000
    """Most answers kept for retries (the oldest go first)."""
    max_wait_us: int = 500
    """Longest a micro-batch keeps gathering concurrent calls; an idle engine never waits."""
    state_capacity: int = 1 << 20
    """Entity slots in the velocity table (power of two); bounds its memory."""
    state_probe: int = 16
    """Slots searched for an entity before the stalest one is evicted."""
    grace_s: float = 5.0
    """On SIGTERM/SIGINT, how long in-flight calls may finish before the server stops."""
    log_level: str = "INFO"
    """Python logging level."""
    policy: dict[str, Any] = field(default_factory=dict)
    """Policy overrides (see engine.decision.policy.PolicyConfig)."""
    limits: dict[str, Any] = field(default_factory=dict)
    """Input limits overrides, a `[limits]` table (see engine.orders.rules.Limits)."""
    tokens: list[Any] = field(default_factory=list)
    """Bearer tokens, `[[tokens]]` tables of name, sha256 (of the secret, never the secret)
    and roles (score, report, admin): `ordersight token` makes one. None = every RPC open
    (see engine.serving.auth)."""
    hash_secret_file: str = ""
    """File holding the secret of the entity keys (card fingerprints, IPs, e-mail domains,
    addresses... are kept only as keyed hashes; at least 16 bytes, surrounding whitespace
    stripped; owner-readable only). Preferred to `hash_secret`, and used when both are set.
    Neither set: a fixed public key, and a warning (see docs/SECURITY.md)."""
    hash_secret: str = field(default="", repr=False)
    """The same secret given as text, normally by $ORDERSIGHT_HASH_SECRET; never logged."""


def _coerce(name: str, value: Any, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"setting '{name}' must be {type(default).__name__}, is {value!r}"
        ) from exc


def load_settings(
    path: str | Path | None = None, env: dict[str, str] | None = None, **overrides: Any
) -> Settings:
    s = Settings()
    environ: Mapping[str, str] = os.environ if env is None else env
    known = {f.name: f for f in fields(Settings)}
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"config {p}: {exc}") from exc
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"config {p}: unknown setting(s) {', '.join(unknown)}")
        values.update(data)
    for name in known:
        if name not in _TABLES and ENV_PREFIX + name.upper() in environ:
            values[name] = environ[ENV_PREFIX + name.upper()]
    values.update({k: v for k, v in overrides.items() if v is not None})
    for name, value in list(values.items()):
        if name not in _TABLES:
            values[name] = _coerce(name, value, getattr(s, name))
    return replace(s, **values)
