"""`make soak`: OrderSight under steady open-loop load for minutes, configured as in production.

One engine (its default front processes, one per core) with the decision log on
(`log_durability` batched, `log_retention_bytes` bounding it on disk), snapshots every
`SNAPSHOT_EVERY_S` (more often than the default, so that a run takes several), the retry
table on (the engine's default) and a registry of two versions of the default models (`a`,
and `b`, the same files under another version name), warmed with the default history.
First its capacity: the most Score calls/s it answers in closed loop at concurrency 64
(`benchmarks.overload.capacity`, with this run's orders);
then `LOAD` of that in open loop (Poisson arrivals, each call with a deadline of
`benchmarks.overload.DEADLINE_S`) for `--minutes`. Every order is new and names new
entities (customers, devices, cards, addresses, IPs: `FreshOrders`), some shared by a few
orders within seconds and a tenth of them by a returning customer's, so the velocity table
(`state_capacity` slots) fills and evicts all along; a ReportOutcomes call (labels of
orders scored a moment before) and a ReportEvent call (checkout errors) take the place of
one Score call in every `OUTCOME_EVERY` and `EVENT_EVERY`. On the way, in the first half:
a hot swap to `b` (ModelAdmin LoadModel) at `SWAP_AT` of the run, then `a` set as
challenger (SetChallenger) at `CHALLENGER_AT`.

Per minute: Score calls answered and their p50 / p99 (from issue to answer), the engine's
own p99 (the answers' `latency_us`), the ReportOutcomes and ReportEvent calls, rejections
(RESOURCE_EXHAUSTED), failures, the resident memory (VmRSS) of the engine process and of
its front processes, the decision log's bytes on disk, the generator's schedule lag.

Pass criteria:
- no call fails: every call sent ends OK, or RESOURCE_EXHAUSTED (a rejection, counted
  apart); any other status (DEADLINE_EXCEEDED, CANCELLED, UNAVAILABLE, INTERNAL, ...) of
  any method is a failure, and so is a ModelAdmin action that does not succeed;
- p99 flat: the Score p99 of each of the last minutes (the last fifth of the run, at
  least one) within `P99_GROWTH` times the median of the minutes before them (minute 0,
  the warm-up, left out): a single slow early minute cannot loosen the bound;
- RSS flat: the engine's mean RSS over the last minute, and the fronts' (summed), within
  `RSS_GROWTH` of the same over the minute at the middle of the run: everything that
  grows on purpose (the velocity table's pages, the retry table, the second and third
  model sets) does so in the first half.

The generator must keep up for the figures to describe the server: calls it could not
issue within their deadline are counted as skipped (never sent, not failures), and its
schedule lag is reported per minute. Writes soak.json and soak.md (with the command).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from ordersight.v1 import risk_pb2 as pb
from ordersight.v1 import risk_pb2_grpc as pb_grpc

from benchmarks.overload import (
    DEADLINE_S,
    PROCS,
    SCORE,
    SKIPPED,
    Calls,
    Layout,
    Offer,
    Running,
    capacity,
    describe_revision,
    percentiles,
    revision,
    statuses,
)
from benchmarks.servers import server_process, wait_serving

ROOT = Path(__file__).resolve().parent.parent
METHODS = (
    SCORE,
    "/ordersight.v1.OrderRisk/ReportOutcomes",
    "/ordersight.v1.OrderRisk/ReportEvent",
)
OUTCOMES, EVENTS = 1, 2  # indices into METHODS
LOAD = 0.7  # of the measured capacity
MINUTES = 10.0
SWAP_AT, CHALLENGER_AT = 0.25, 0.40  # of the run
SAMPLE_S = 5.0  # between two readings of the processes' RSS and the engine's metrics
SNAPSHOT_EVERY_S = 120.0
LOG_RETENTION_BYTES = 1 << 30
P99_GROWTH = 1.5
RSS_GROWTH = 0.05
OUTCOME_EVERY, OUTCOMES_PER_CALL, OUTCOME_LAG = 200, 20, 1000
EVENT_EVERY = 100
RETURNING = 10  # one order in RETURNING is a returning customer's...
RETURN_SPAN = 200_000  # ...of an order up to this many orders before
PORT = 50551
METRICS = (
    "ordersight_rejected_total",
    "ordersight_log_bytes_total",
    "ordersight_log_segments",
    "ordersight_log_queue",
    "ordersight_log_lost_rows",
    "ordersight_log_errors",
    "ordersight_orders_refused",
    "ordersight_snapshot_age_seconds",
    "ordersight_snapshot_bytes",
    "ordersight_snapshot_write_seconds",
    "ordersight_challenger_decisions",
    "ordersight_challenger_dropped",
    "ordersight_model_swaps_total",
    "ordersight_retries",
    "ordersight_degraded",
)
COUNTRIES = (("US", "USD"), ("GB", "GBP"), ("DE", "EUR"), ("FR", "EUR"), ("CA", "CAD"))
CHANNELS = ("web", "app", "marketplace", "phone")
DOMAINS = ("gmail.com", "outlook.com", "yahoo.com", "gmx.de", "orange.fr", "hotmail.com")
CATEGORIES = ("home", "grocery", "books", "apparel", "electronics", "beauty", "gift_card")
METHODS_PAID = ("card", "card", "card", "wallet", "bank_transfer")
ERROR_CODES = ("PAYMENT_TIMEOUT", "CARD_DECLINED", "3DS_FAILED", "ADDRESS_INVALID")
MASK = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64: a well-spread 64-bit hash of x."""
    x = (x + 0x9E3779B97F4A7C15) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


@dataclass(frozen=True)
class FreshOrders:
    """The soak's calls (`benchmarks.overload.Source`): the k-th is a Score call of a new order
    `{run}-o{k}` made at the wall clock's now, or, with `feedback`, in one call of
    OUTCOME_EVERY a ReportOutcomes of the OUTCOMES_PER_CALL orders OUTCOME_LAG before it (one
    in fifty fraud) and in one of EVENT_EVERY a ReportEvent of one to three checkout errors.

    Entities: order k's customer, card and address are shared with one neighbour
    (k // 2), its device with two (k // 3), its IP with three (k // 4); one order in
    RETURNING takes all of them from an order up to RETURN_SPAN before it. So about two new
    entities per order, every one of them named after `run`."""

    run: str
    feedback: bool = True

    def method(self, k: int) -> int:
        if self.feedback and k % OUTCOME_EVERY == OUTCOME_EVERY - 1:
            return OUTCOMES
        if self.feedback and k % EVENT_EVERY == EVENT_EVERY // 2:
            return EVENTS
        return 0

    def order(self, k: int) -> pb.Order:
        h = _mix(k)
        e = k  # whose entities
        if k >= RETURN_SPAN and h % RETURNING == 0:
            e = k - 1 - (h >> 8) % RETURN_SPAN
        he = _mix(e // 2)
        country, currency = COUNTRIES[he % len(COUNTRIES)]
        ip = (e // 4) % (1 << 24)
        now = time.time()
        o = pb.Order(
            order_id=f"{self.run}-o{k}",
            customer_id=f"{self.run}-c{e // 2}",
            amount_minor=500 + (h >> 12) % 60_000,
            currency=currency,
            channel=CHANNELS[(h >> 40) % len(CHANNELS)],
            ip=f"10.{ip >> 16}.{(ip >> 8) & 255}.{ip & 255}",
            ip_country=country if (h >> 44) % 20 else COUNTRIES[(h >> 48) % 5][0],
            device_id=f"{self.run}-d{e // 3}",
        )
        o.created_at.FromNanoseconds(int(now * 1e9))
        c = o.customer
        c.account_created_at.FromSeconds(int(now) - 86_400 * ((he >> 8) % 2_000) - 3_600)
        c.email_domain = DOMAINS[(he >> 20) % len(DOMAINS)]
        c.key_account = (he >> 24) % 50 == 0
        p = o.payment
        p.method = METHODS_PAID[(he >> 28) % len(METHODS_PAID)]
        if p.method == "card":
            p.card_bin = f"4{(he >> 32) % 100_000:05d}"
            p.card_fingerprint = f"{self.run}-k{e // 2}"
        p.billing_country = country
        s = o.shipping
        s.country = country if (h >> 52) % 10 else COUNTRIES[(h >> 56) % 5][0]
        s.postal_code = f"{(he >> 36) % 100_000:05d}"
        s.address_fingerprint = f"{self.run}-a{e // 2}"
        left = o.amount_minor
        lines = 1 + (h >> 20) % 3
        for i in range(lines):
            price = left if i == lines - 1 else left // 2
            left -= price
            cat = CATEGORIES[(h >> (24 + 3 * i)) % len(CATEGORIES)]
            o.items.add(sku=f"{cat}-{(h >> (30 + 4 * i)) % 1000:04d}", category=cat,
                        quantity=1, unit_price_minor=price)  # fmt: skip
        return o

    def request(self, k: int) -> tuple[int, bytes]:
        m = self.method(k)
        if m == OUTCOMES:
            first = max(k - OUTCOME_LAG - OUTCOMES_PER_CALL, 0)
            req = pb.ReportOutcomesRequest()
            for j in range(first, first + OUTCOMES_PER_CALL):
                req.outcomes.add(is_fraud=_mix(j) % 50 == 0).order.CopyFrom(self.order(j))
            return m, req.SerializeToString()
        if m == EVENTS:
            h = _mix(k)
            ev = pb.ReportEventRequest()
            for i in range(1 + h % 3):
                e = ev.events.add(
                    channel=CHANNELS[(h >> (8 + 2 * i)) % len(CHANNELS)],
                    code=ERROR_CODES[(h >> (16 + 2 * i)) % len(ERROR_CODES)],
                )
                e.time.FromNanoseconds(time.time_ns())
            return m, ev.SerializeToString()
        return m, self.order(k).SerializeToString()


def group_rss(root: int) -> dict[int, tuple[str, int]]:
    """VmRSS (bytes) of `root` and every process in its process group, by pid, with its
    role (engine or front)."""
    out = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (p / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[2]) != root and int(p.name) != root:
                continue
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            role = "front" if "engine.serving.front" in cmd else "engine"
            for line in (p / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out[int(p.name)] = (role, int(line.split()[1]) * 1024)
    return out


def read_metrics(url: str) -> dict[str, float]:
    """The engine's metrics named in METRICS (each labelled series under its full name)."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(METRICS):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def make_registry(models: Path, root: Path) -> Path:
    """`root/a`: the models; `root/b`: the same files as another version."""
    shutil.copytree(models, root / "a")
    shutil.copytree(models, root / "b")
    manifest = json.loads((root / "b" / "manifest.json").read_text())
    manifest["version"] += "-b"
    (root / "b" / "manifest.json").write_text(json.dumps(manifest))
    return root


def _admin(target: str, action: str) -> dict[str, Any]:
    """One ModelAdmin action (swap: LoadModel b; challenger: SetChallenger a), timed."""
    t0 = time.monotonic()
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.ModelAdminStub(channel)
        try:
            if action == "swap":
                st = stub.LoadModel(pb.LoadModelRequest(version="b"), timeout=300)
            else:
                st = stub.SetChallenger(pb.LoadModelRequest(version="a"), timeout=300)
        except grpc.RpcError as exc:
            return {"ok": False, "error": f"{exc.code().name}: {exc.details()}",
                    "took_s": time.monotonic() - t0}  # fmt: skip
    return {"ok": True, "took_s": time.monotonic() - t0, "champion": st.champion,
            "challenger": st.challenger}  # fmt: skip


def _status(target: str) -> dict[str, Any]:
    with grpc.insecure_channel(target) as channel:
        st = pb_grpc.ModelAdminStub(channel).GetStatus(pb.GetModelStatusRequest(), timeout=30)
    return {
        "champion": st.champion, "previous": st.previous, "swaps": st.swaps,
        "challenger": st.challenger, "challenger_decisions": st.challenger_decisions,
        "challenger_dropped": st.challenger_dropped,
        "challenger_agreement": st.challenger_agreement,
        "state_bytes": st.state_bytes, "state_orders": st.state_orders,
    }  # fmt: skip


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under `folder` (0 when it does not exist)."""
    total = 0
    for f in folder.rglob("*"):
        with contextlib.suppress(OSError):
            total += f.stat().st_size if f.is_file() else 0
    return total


def soak_run(
    target: str,
    pid: int,
    metrics_url: str,
    log_dir: Path,
    rate: float,
    minutes: float,
    run: str,
    log: Any,
) -> tuple[Calls, list[dict[str, Any]], list[dict[str, Any]]]:
    """The open-loop load for `minutes`, the ModelAdmin actions on the way and the samples
    of RSS, the decision log's bytes on disk and the engine's metrics every SAMPLE_S:
    (calls, samples, actions)."""  # fmt: skip
    seconds = minutes * 60.0
    offer = Offer(target, methods=METHODS, rate=rate, duration_s=seconds, warmup_s=0.0, procs=PROCS)
    running = Running(offer, FreshOrders(run))
    due = [(SWAP_AT * seconds, "swap"), (CHALLENGER_AT * seconds, "challenger")]
    samples: list[dict[str, Any]] = []
    actions: list[dict[str, Any]] = []
    pending = []
    with ThreadPoolExecutor(1) as pool:
        k = 0
        while True:
            at = running.start + k * SAMPLE_S
            if at > running.start + seconds:
                break
            time.sleep(max(at - time.monotonic(), 0.0))
            now = time.monotonic() - running.start
            while due and due[0][0] <= now:
                when, name = due.pop(0)
                pending.append((when, name, pool.submit(_admin, target, name)))
            rss = group_rss(pid)
            samples.append({
                "t": now,
                "engine_rss": sum(r for role, r in rss.values() if role == "engine"),
                "fronts_rss": sum(r for role, r in rss.values() if role == "front"),
                "fronts": sum(role == "front" for role, _ in rss.values()),
                "log_disk_bytes": folder_bytes(log_dir),
                "metrics": read_metrics(metrics_url),
            })  # fmt: skip
            if k % int(60 / SAMPLE_S) == 0:
                s = samples[-1]
                log(
                    f"  {now / 60:4.1f} min: engine {s['engine_rss'] / 2**20:,.0f} MiB, "
                    f"fronts {s['fronts_rss'] / 2**20:,.0f} MiB"
                )
            k += 1
        calls = running.join()
        for when, name, fut in pending:
            actions.append({"action": name, "at_s": when, **fut.result()})
            log(f"  {name} at {when:.0f} s: {actions[-1]}")
    return calls, samples, actions


def per_minute(calls: Calls, samples: list[dict[str, Any]], minutes: float) -> list[dict]:
    """The run's figures for each whole minute."""
    rows = []
    minute = np.floor(calls.sched / 60.0).astype(np.int64)
    ok = calls.code == 0
    refused = calls.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    skipped = calls.code == SKIPPED
    failed = ~ok & ~refused & ~skipped
    for m in range(int(minutes)):
        here = minute == m
        score = here & (calls.method == 0)
        t0, t1 = 60.0 * m, 60.0 * (m + 1)
        mine = [s for s in samples if t0 <= s["t"] < t1] or samples[-1:]
        lag = calls.lag[here & ~skipped]
        rows.append({
            "minute": m,
            "score_calls": int((score & ok).sum()),
            "score_ms": percentiles(calls.latency[score & ok], (50, 99)),
            "score_in_engine_ms": percentiles(calls.engine[score & ok], (50, 99)),
            "outcome_calls": int((here & (calls.method == OUTCOMES) & ok).sum()),
            "event_calls": int((here & (calls.method == EVENTS) & ok).sum()),
            "rejected": int((here & refused).sum()),
            "failed": int((here & failed).sum()),
            "skipped": int((here & skipped).sum()),
            "statuses": statuses(calls.code[here]),
            "schedule_lag_ms": percentiles(lag, (50, 99)),
            "engine_rss_mib": float(np.mean([s["engine_rss"] for s in mine])) / 2**20,
            "fronts_rss_mib": float(np.mean([s["fronts_rss"] for s in mine])) / 2**20,
            "fronts": int(mine[-1]["fronts"]),
            "log_disk_mib": mine[-1]["log_disk_bytes"] / 2**20,
        })  # fmt: skip
    return rows


def timeline(calls: Calls, seconds: float) -> list[dict[str, Any]]:
    """Per second of the run: Score calls answered OK, their p99 and worst latency (ms),
    the worst time in the engine, and the calls that were not OK (rejected or failed)."""
    second = np.floor(calls.sched).astype(np.int64)
    score = calls.method == 0
    ok = score & (calls.code == 0)
    out = []
    order = np.argsort(second, kind="stable")
    bounds = np.searchsorted(second[order], np.arange(int(seconds) + 1))
    for t in range(int(seconds)):
        idx = order[bounds[t] : bounds[t + 1]]
        good = idx[ok[idx]]
        lat, inside = calls.latency[good] * 1e3, calls.engine[good] * 1e3
        out.append({
            "t": t,
            "ok": int(good.size),
            "p99_ms": float(np.percentile(lat, 99)) if good.size else float("nan"),
            "max_ms": float(lat.max()) if good.size else float("nan"),
            "engine_max_ms": float(inside.max()) if good.size else float("nan"),
            "not_ok": int((calls.code[idx] != 0).sum()),
        })  # fmt: skip
    return out


def snapshot_times(samples: list[dict[str, Any]]) -> list[int]:
    """When the engine wrote its snapshots (s into the run), from the samples' snapshot ages."""
    seen = set()
    for s in samples:
        age = s["metrics"].get("ordersight_snapshot_age_seconds", float("nan"))
        if age == age and s["t"] - age >= 0:
            seen.add(round(s["t"] - age))
    return sorted(seen)


def refusal_seconds(seconds: list[dict[str, Any]]) -> list[int]:
    """The seconds of the run (`timeline`) in which some call was not answered OK."""
    return [s["t"] for s in seconds if s["not_ok"]]


def checks(rows: list[dict], actions: list[dict], calls: Calls) -> dict[str, Any]:
    """The pass criteria (module docstring) over the per-minute rows."""
    n = len(rows)
    first_last = max(n - max(n // 5, 1), 2)
    last = rows[first_last:] if n > 2 else []
    before = [r["score_ms"]["p99"] for r in rows[1:first_last]]
    base = float(np.median(before)) if before else float("nan")
    mid = rows[n // 2] if n > 2 else None
    out: dict[str, Any] = {
        "failed_calls": int(sum(r["failed"] for r in rows)),
        "failed_actions": [a["action"] for a in actions if not a["ok"]],
        "baseline_minutes": [r["minute"] for r in rows[1:first_last]],
        "baseline_p99_ms": base,
        "last_minutes": [r["minute"] for r in last],
        "last_p99_ms": [r["score_ms"]["p99"] for r in last],
        "p99_growth_bound": P99_GROWTH,
        "rss_growth_bound": RSS_GROWTH,
        "skipped_calls": int((calls.code == SKIPPED).sum()),
    }
    out["no_failures"] = out["failed_calls"] == 0 and not out["failed_actions"]
    out["p99_flat"] = bool(last) and all(p <= P99_GROWTH * base for p in out["last_p99_ms"])
    if mid is not None:
        for role in ("engine", "fronts"):
            a, b = mid[f"{role}_rss_mib"], rows[-1][f"{role}_rss_mib"]
            out[f"{role}_rss_growth"] = b / a - 1.0 if a else float("nan")
        out["rss_flat"] = all(out[f"{r}_rss_growth"] <= RSS_GROWTH for r in ("engine", "fronts"))
    else:
        out["rss_flat"] = False
    out["passed"] = out["no_failures"] and out["p99_flat"] and out["rss_flat"]
    return out


def measure(
    models: Path, history: Path, minutes: float, logs: Path, log: Any, port: int = PORT
) -> dict[str, Any]:
    """Start the engine in a temporary folder, measure its capacity, soak it."""
    metrics_port = port + 30
    target, metrics_url = f"127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics"
    run = f"soak{os.getpid()}"
    rev = revision()
    with tempfile.TemporaryDirectory(prefix="ordersight-soak-") as tmp:
        root = Path(tmp)
        registry = make_registry(models, root / "registry")
        config = root / "config.toml"
        settings = {
            "registry": str(registry),
            "log_dir": str(root / "log"),
            "log_durability": "batched",
            "log_retention_bytes": LOG_RETENTION_BYTES,
            "snapshot_dir": str(root / "state"),
            "snapshot_every_s": SNAPSHOT_EVERY_S,
            "metrics_port": metrics_port,
        }
        config.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
        cmd = [
            sys.executable, "-m", "engine.cli", "serve", "--config", str(config),
            "--models", str(registry / "a"), "--port", str(port), "--warm-from", str(history),
        ]  # fmt: skip
        # The benchmark servers' retry table is off (servers.NO_RETRY_TABLE); a production
        # engine's is on, and every order here is new.
        env = {"ORDERSIGHT_IDEMPOTENCY_WINDOW_S": "86400"}
        with server_process(cmd, logs / "soak-server.log", env) as proc:
            wait_serving(target, proc)
            log("capacity (closed loop, c=64):")
            cap = capacity(
                target, lambda r: FreshOrders(f"{run}cap{r}", False), proc.pid,
                Layout.shared(), log,
            )  # fmt: skip
            rate = LOAD * cap["calls_per_s"]
            log(f"soak: {rate:,.0f} calls/s for {minutes:g} min")
            calls, samples, actions = soak_run(
                target, proc.pid, metrics_url, root / "log", rate, minutes, run, log
            )
            final = _status(target)
            disk = folder_bytes(root / "log")
            snapshot = root / "state"
            snapshots = sorted(f.name for f in snapshot.rglob("*") if f.is_file())
    rows = per_minute(calls, samples, minutes)
    result = {
        "settings": {
            **{k: v for k, v in settings.items() if k != "registry"},
            "idempotency_window_s": 86400,
            "load": LOAD,
            "deadline_s": DEADLINE_S,
            "generator_procs": PROCS,
            "workers": os.cpu_count(),
            "outcome_every": OUTCOME_EVERY,
            "outcomes_per_call": OUTCOMES_PER_CALL,
            "event_every": EVENT_EVERY,
        },  # fmt: skip
        "revision": rev,
        "minutes": minutes,
        "capacity": cap,
        "rate": rate,
        "actions": actions,
        "rows": rows,
        "final_status": final,
        "final_metrics": samples[-1]["metrics"] if samples else {},
        "log_disk_bytes": disk,
        "snapshot_files": snapshots,
        "statuses": {
            name: statuses(calls.code[calls.method == i]) for i, name in enumerate(METHODS)
        },
        "details": calls.details,
        "client_cpu_cores": calls.cpu_s / (minutes * 60.0),
        "samples": samples,
        "timeline": timeline(calls, minutes * 60.0),
    }
    result["checks"] = checks(rows, actions, calls)
    result["passed"] = result["checks"]["passed"]
    return result


def markdown(result: dict[str, Any]) -> str:
    c, st, s = result["checks"], result["final_status"], result["settings"]
    lines = [
        "# Soak",
        "",
        f"Command: `{result['command']}`"
        + (f" on {result['machine']['date']}" if "machine" in result else "")
        + f". OrderSight with {s['workers']} front processes, the decision log on "
        f"(`log_durability` {s['log_durability']}, `log_retention_bytes` "
        f"{s['log_retention_bytes']:,}), snapshots every {s['snapshot_every_s']:g} s, the "
        f"retry table on; {result['minutes']:g} minutes of Poisson arrivals at "
        f"{result['rate']:,.0f} calls/s ({s['load']:.0%} of the capacity, "
        f"{result['capacity']['calls_per_s']:,.0f} Score calls/s in closed loop at "
        f"concurrency 64 with the log on), every order new with new entities, one "
        f"ReportOutcomes ({s['outcomes_per_call']} outcomes) per {s['outcome_every']} calls "
        f"and one ReportEvent per {s['event_every']}; the generator's "
        f"{s['generator_procs']} processes on the same cores, each call with a "
        f"{s['deadline_s']:g} s deadline.{describe_revision(result.get('revision', {}))}",
        "",
        "Actions: "
        + "; ".join(
            f"{a['action']} at {a['at_s'] / 60:.1f} min "
            + (
                f"({a['took_s']:.1f} s, champion {a['champion']}, challenger "
                f"{a['challenger'] or 'none'})"
                if a["ok"]
                else f"FAILED: {a['error']}"
            )  # fmt: skip
            for a in result["actions"]
        )
        + f". At the end: champion {st['champion']} (previous {st['previous']}, "
        f"{st['swaps']} swap(s)), challenger {st['challenger'] or 'none'} "
        f"({st['challenger_decisions']:,} decisions, {st['challenger_dropped']:,} dropped, "
        f"agreement {st['challenger_agreement']:.3f}), velocity state "
        f"{st['state_bytes'] / 2**20:,.0f} MiB after {st['state_orders']:,} orders; decision "
        f"log {result['log_disk_bytes'] / 2**20:,.0f} MiB on disk.",
        "",
        "| minute | Score calls | Score p50 / p99 ms | in the engine p50 / p99 ms "
        "| ReportOutcomes / ReportEvent calls | rejected | failed | skipped "
        "| engine RSS MiB | fronts RSS MiB | log MiB | schedule lag p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        sc, ie = r["score_ms"], r["score_in_engine_ms"]
        lines.append(
            f"| {r['minute']} | {r['score_calls']:,} | {sc['p50']:.2f} / {sc['p99']:.2f} | "
            f"{ie['p50']:.2f} / {ie['p99']:.2f} | {r['outcome_calls']:,} / "
            f"{r['event_calls']:,} | {r['rejected']:,} | {r['failed']:,} | {r['skipped']:,} | "
            f"{r['engine_rss_mib']:,.0f} | {r['fronts_rss_mib']:,.0f} | "
            f"{r['log_disk_mib']:,.0f} | {r['schedule_lag_ms']['p99']:.1f} |"
        )
    failed = {
        k: v
        for m in result["statuses"].values()
        for k, v in m.items()
        if k not in ("OK", "RESOURCE_EXHAUSTED", "SKIPPED") and v
    }
    lines += [
        "",
        "Failed: any status of any method but OK and RESOURCE_EXHAUSTED (a rejection); "
        "skipped: calls the generator could not issue within their deadline (never sent). "
        "Statuses over the run: "
        + "; ".join(
            f"{name.rsplit('/', 1)[1]} "
            + ", ".join(f"{k} {v:,}" for k, v in m.items() if v or k == "OK")
            for name, m in result["statuses"].items()
        )
        + "."
        + (f" First message of each error: {result['details']}." if failed else ""),
        "",
        "Seconds of the run with calls not answered OK: "
        + (", ".join(map(str, refusal_seconds(result["timeline"]))) or "none")
        + "; snapshots taken at about "
        + (", ".join(map(str, snapshot_times(result["samples"]))) or "(none)")
        + " s (the engine's snapshot age, read every "
        + f"{SAMPLE_S:g} s). The swap and the challenger at "
        + ", ".join(f"{a['at_s']:.0f}" for a in result["actions"])
        + " s.",
        "",
        *(
            ["The run is too short for the flatness checks (3 whole minutes at least).", ""]
            if len(result["rows"]) < 3
            else []
        ),  # fmt: skip
        "| check | figure | bound | met |",
        "|---|---|---|---|",
        f"| no call or action failed | {c['failed_calls']:,} failed calls, failed actions: "
        f"{', '.join(c['failed_actions']) or 'none'} | 0 | {_yes(c['no_failures'])} |",
        f"| Score p99 flat: minutes {', '.join(map(str, c['last_minutes']))} vs the median of "
        f"minutes {c['baseline_minutes'][0]}–{c['baseline_minutes'][-1]} | "
        + ", ".join(f"{p:.2f}" for p in c["last_p99_ms"])
        + f" vs {c['baseline_p99_ms']:.2f} ms | <= {c['p99_growth_bound']:g}x | "
        f"{_yes(c['p99_flat'])} |",
        f"| engine RSS, last minute vs the middle one | {c.get('engine_rss_growth', 0):+.1%} | "
        f"<= {c['rss_growth_bound']:.0%} | {_yes(c.get('engine_rss_growth', 1) <= RSS_GROWTH)} |",
        f"| fronts' RSS, last minute vs the middle one | {c.get('fronts_rss_growth', 0):+.1%} | "
        f"<= {c['rss_growth_bound']:.0%} | {_yes(c.get('fronts_rss_growth', 1) <= RSS_GROWTH)} |",
        "",
        f"Generator: {c['skipped_calls']:,} calls skipped, "
        f"{result['client_cpu_cores']:.2f} CPU cores. Overall: "
        + ("pass" if result["passed"] else "FAIL")
        + ".",
        "",
    ]
    return "\n".join(lines)


def _yes(ok: bool) -> str:
    return "yes" if ok else "no"


def main(argv: list[str] | None = None) -> int:
    from benchmarks.run import machine

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--minutes", type=float, default=MINUTES)
    p.add_argument("--models", default=str(ROOT / "models/default"))
    p.add_argument("--history", default=str(ROOT / "models/default-history.parquet"))
    p.add_argument("--out", default=str(ROOT / "benchmarks/results"))
    args = p.parse_args(argv)
    out = Path(args.out)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    result = measure(
        Path(args.models), Path(args.history), args.minutes, logs,
        lambda m: print(m, flush=True),
    )  # fmt: skip
    command = "make soak" if args.minutes == MINUTES else f"make soak SOAK_MINUTES={args.minutes:g}"
    result = {"machine": machine(), "command": command, **result}
    (out / "soak.json").write_text(json.dumps(result, indent=2))
    (out / "soak.md").write_text(markdown(result))
    print(markdown(result))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
