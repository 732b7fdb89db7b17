"""The benchmark's report: results.md (tables of every section) and the latency plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        "# OrderSight benchmarks",
        "",
        f"Command: `{results['command']}` on {m['date']}. Machine: {m['cpu']}, {m['cores']} "
        f"cores, Python {m['python']}; " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()),
        "",
        "Load generator and servers share this machine's cores: the generator's own CPU use "
        "is in its own column. Server CPU per call: user + system time of every process of "
        "the server (engine and front processes) over the load point, divided by the calls "
        "answered. ordersight-Nw: N gRPC front processes before the one engine process. "
        "link-floor: one such front before an engine stand-in that scores nothing "
        "(`benchmarks/link_floor.py`): the cost of the hop alone. The "
        "servers are warmed with the history but its last "
        f"{results['held_out_orders']:,} orders, which are the calls sent.",
        "",
        "## Targets",
        "",
        "| target | figure | goal | met |",
        "|---|---|---|---|",
    ]
    for t in results["targets"]:
        fig = t["figure"]
        shown = f"{fig:,.0f}" if fig is not None and abs(fig) >= 1000 else f"{fig:.3f}"
        lines.append(f"| {t['target']} | {shown} | {t['goal']} | {'yes' if t['met'] else 'no'} |")
    lines += [
        "",
        "## Score over gRPC",
        "",
        "| server | concurrency | rate | calls/s | p50 ms | p95 ms | p99 ms | p99.9 ms "
        "| client cores | server CPU µs/call (engine + fronts) | calls per micro-batch |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["score"]:
        cpu = ""
        if "server_cpu_us" in r:
            roles = r["server_cpu_us_by_role"]
            cpu = f"{r['server_cpu_us']:,.0f}"
            if "front" in roles:
                cpu += f" ({roles.get('engine', 0):,.0f} + {roles['front']:,.0f})"
        lines.append(
            f"| {r['target']} | {r['concurrency'] or ''} | {r['rate'] or ''} | "
            f"{r['calls_per_s']:,.0f} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['p999_ms']:.2f} | {r['client_cpu_cores']:.2f} | {cpu} | "
            + (f"{r['mean_batch']:.2f} |" if "mean_batch" in r else " |")
        )
    lines += _paired(results.get("paired", []))
    lines += _durability(results.get("durability"))
    if "mlserver" in results:
        lines += ["", "MLServer configurations tried at concurrency 64 (best used above):", ""]
        for t in results["mlserver"]["tried"]:
            lines.append(
                f"- parallel_workers={t['parallel_workers']}, max_batch_size="
                f"{t['max_batch_size']}, max_batch_time={t['max_batch_time_s']}s: "
                f"{t['calls_per_s']:,.0f} calls/s, p99 {t['p99_ms']:.2f} ms"
            )
    if results.get("scaling"):
        lines += [
            "",
            "## Scaling: load generator pinned to CPU 0, concurrency 64",
            "",
            "| server | calls/s | p99 ms | server CPU µs/call | client cores |",
            "|---|---|---|---|---|",
        ]
        for r in results["scaling"]:
            lines.append(
                f"| {r['setup']} | {r['calls_per_s']:,.0f} | {r['p99_ms']:.2f} | "
                f"{r['server_cpu_us']:,.0f} | {r['client_cpu_cores']:.2f} |"
            )
    rep = results.get("replication")
    if rep:
        lines += [
            "",
            "## Two replicas over NATS JetStream",
            "",
            f"Both replicas (one front process each) driven at once, concurrency 32 each: "
            f"{rep['calls_per_s']:,.0f} calls/s in all, p99 {rep['p99_ms']:.2f} ms, "
            f"{rep['errors']} errors; both states held every order the other accepted "
            f"{rep['converged_after_load_s'] * 1e3:,.0f} ms after the load stopped.",
            "",
            "| replica | messages applied | mean lag ms | p50 lag ms (bucket bound) "
            "| p99 lag ms (bucket bound) |",
            "|---|---|---|---|---|",
        ]
        for name, v in rep["lag"].items():
            lines.append(
                f"| {name} | {v['messages']:,.0f} | {v['mean_ms']:.2f} | {v['p50_le_ms']:.0f} "
                f"| {v['p99_le_ms']:.0f} |"
            )
    lines += ["", "## Bulk", "", "| path | orders | orders/s |", "|---|---|---|"]
    for r in results["bulk"]:
        lines.append(f"| {r['rpc']} | {r['orders']:,} | {r['orders_per_s']:,.0f} |")
    sf = [r for r in results["bulk"] if "first_call_seconds" in r]
    if sf:
        lines += [
            "",
            f"ScoreBatch: best of 3 calls, client-side wall time. score-file: the second call in a "
            f"fresh process ({sf[0]['seconds']:.2f} s); the first, which also loads the models and "
            f"Numba's cached kernels, took {sf[0]['first_call_seconds']:.2f} s.",
        ]
    lines += ["", "## In-process stages (ns per order)", ""]
    cols = [k for k in results["stages"][0] if k != "batch"]
    lines += ["| batch | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for s in results["stages"]:
        lines.append(f"| {s['batch']} | " + " | ".join(f"{s[c]:,.0f}" for c in cols) + " |")
    rt = results["tier2_runtimes"]
    names = [k for k in rt[1] if k != "batch"]
    lines += [
        "",
        "## Tier two runtimes, same model, one thread (ns per row)",
        "",
        "| batch | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for r in rt[1:]:
        lines.append(f"| {r['batch']} | " + " | ".join(f"{r[n]:,.0f}" for n in names) + " |")
    lines += [
        "",
        "Largest difference from LightGBM's own predictions: "
        + ", ".join(f"{k} {v:.1e}" for k, v in rt[0]["max_abs_diff_vs_lightgbm"].items()),
    ]
    lines += [
        "",
        "## Reason codes: TreeSHAP per row (µs)",
        "",
        "| batch | engine tables | LightGBM pred_contrib |",
        "|---|---|---|",
    ]
    for r in results.get("explain_runtimes", []):
        lines.append(
            f"| {r['batch']} | {r['engine_treeshap_us']:,.1f} | "
            f"{r['lightgbm_pred_contrib_us']:,.1f} |"
        )
    if results.get("explain_runtimes"):
        diff = results["explain_runtimes"][0]["max_abs_diff"]
        lines += ["", f"Largest difference between the two: {diff:.1e}"]
    if results.get("forecast"):
        from benchmarks.forecast_serving import markdown as forecast_markdown

        lines += ["", forecast_markdown(results["forecast"]).rstrip("\n")]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    """p50 and p99 against calls/s: closed loop as lines (concurrency 1 to 256), open loop
    (fixed rates) as separate markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for ax, q in zip(axes, ("p50", "p99"), strict=True):
        for target in sorted({r["target"] for r in results["score"]}):
            closed = [r for r in results["score"] if r["target"] == target and r["concurrency"]]
            opened = [r for r in results["score"] if r["target"] == target and r["rate"]]
            if not closed:
                continue
            closed.sort(key=lambda r: r["concurrency"])
            line = ax.plot(
                [r["calls_per_s"] for r in closed],
                [r[f"{q}_ms"] for r in closed],
                "o-",
                label=f"{target}, closed loop (c=1..256)",
            )[0]
            ax.plot(
                [r["calls_per_s"] for r in opened],
                [r[f"{q}_ms"] for r in opened],
                "x",
                ms=9,
                color=line.get_color(),
                label=f"{target}, open loop",
            )
        ax.set(xlabel="calls/s", ylabel=f"{q} latency (ms)", yscale="log", title=f"Score: {q}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _durability(d: dict[str, Any] | None) -> list[str]:
    """The decision log's cost per durability mode, in paired rounds beside the echo."""
    if not d:
        return []
    title = "Decision log durability: ratios to the echo within each round"
    intro = (
        "OrderSight with one front and no decision log, then with the log off (written, "
        "never fsync'ed), batched (fsync every 100 ms) and fsync (each answer after its "
        f"group commit is on disk); {d['bytes_per_row']:,.0f} bytes per logged decision in "
        f"fsync mode ({d['rows_logged']:,} rows)."
    )
    return _paired(d["rows"], title, intro)


def _paired(
    rows: list[dict[str, Any]],
    title: str = "Paired rounds: ratios to the echo within each round",
    intro: str = "Echo, the link floor and OrderSight with one front (alone, with a "
    "challenger in shadow, with a bearer token) serve at once.",
) -> list[str]:
    """Paired rounds (`benchmarks.paired`), each ratio taken within a round: what the
    transport costs, what the hop to the engine adds, and what scoring adds."""
    if not rows:
        return []
    out = [
        "",
        f"## {title} ({rows[0]['rounds']} rounds)",
        "",
        intro + " They are driven in turn, a few seconds each, the order rotating by "
        "round; each ratio is taken within a round and shown as median (range).",
        "",
        "| concurrency | server | calls/s | vs echo | server CPU µs/call | vs echo | p99 ms "
        "| p99 minus echo's, ms |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def span(d: dict[str, float], fmt: str) -> str:
        return f"{d['median']:{fmt}} ({d['min']:{fmt}} – {d['max']:{fmt}})"

    for r in rows:
        out.append(
            f"| {r['concurrency']} | {r['server']} | {r['calls_per_s']:,.0f} | "
            f"{span(r['calls_per_s_ratio'], '.2f')} | {r['server_cpu_us']:,.0f} | "
            f"{span(r['server_cpu_ratio'], '.2f')} | {r['p99_ms']:.2f} | "
            f"{span(r['p99_minus_echo_ms'], '+.2f')} |"
        )
    return out
