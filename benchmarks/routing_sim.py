"""`python -m benchmarks.routing_sim`: a simulated working week of complex-order cases routed to
agents by four routers on the same arrivals (`engine.routing.workday`), in one run.

Routers: round-robin, skills-only, least-loaded and the engine's own (`engine.routing.router`,
learning online from the completions it is told about, from a cold start). Worlds: `default`
and `shifted` (case_sim's shifted text, another case mix than the team was hired for, one
agent fewer), each for several seeds; a seed fixes the arrivals, the cases, the agents and
the noise, so the routers' figures on one seed differ only by what the routers did.

The text model the routers read categories from is trained here on `default` cases of
another case_sim seed than any week's; its macro-F1 is measured on each week's cases.

Writes benchmarks/results/routing/simulation.{md,json,png} and routed_cases.parquet (every
case of the default world's first seed under ordersight and under round-robin, in the
columns of table routing_cases plus `router`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.metrics import f1_score

from engine.routing import workday_agents as wa
from engine.routing.case_sim import simulate_cases
from engine.routing.team import PRIORITIES
from engine.routing.text_fit import TrainOptions
from engine.routing.text_model import TextRouter, train
from engine.routing.text_prep import GENERAL
from engine.routing.workday import (
    CASE_COLUMNS,
    CONFIGS,
    HOURLY,
    TEXT_COLS,
    WEEKDAY,
    Week,
    build_week,
    run_week,
)

ROOT = Path(__file__).resolve().parent.parent
ROUTERS = ("round_robin", "skills_only", "least_loaded", "ordersight")
BASELINES = ROUTERS[:3]
TRAIN_CASES = 1000
TRAIN_SEED = 77  # the weeks' cases are case_sim seeds 1000 + seed
PARQUET_ROUTERS = ("ordersight", "round_robin")
METRICS = ("mean_h", "p90_h", "sla_breach", "utilisation", "rework", "open", "overtime_h")


def train_text(folder: Path) -> tuple[TextRouter, dict[str, Any]]:
    cases = simulate_cases(TRAIN_CASES, config="default", seed=TRAIN_SEED)
    t0 = time.perf_counter()
    router, _ = train(
        [cases.column(c).to_pylist() for c in TEXT_COLS], cases.column("queue").to_pylist(),
        cases.column("priority").to_pylist(), TrainOptions(), folder,
        text_cols=TEXT_COLS, label_col="queue", priority_col="priority",
    )  # fmt: skip
    return router, {
        "cases": TRAIN_CASES, "config": "default", "seed": TRAIN_SEED,
        "seconds": time.perf_counter() - t0, "version": router.version,
        "threshold": router.threshold,
    }  # fmt: skip


def text_scores(week: Week) -> dict[str, float]:
    t = week.cases
    y, pred = t.column("queue").to_pylist(), t.column("predicted").to_pylist()
    prio, pprio = t.column("priority").to_pylist(), t.column("predicted_priority").to_pylist()
    rank = {p: i for i, p in enumerate(PRIORITIES)}
    return {
        "macro_f1": float(f1_score(y, pred, labels=sorted(set(y)), average="macro")),
        "accuracy": float(np.mean(np.array(y) == np.array(pred))),
        "general_share": float(np.mean(np.array(pred) == GENERAL)),
        "priority_accuracy": float(np.mean(np.array(prio) == np.array(pprio))),
        "priority_under_predicted": float(np.mean([rank[a] < rank[b] for a, b in
                                                   zip(pprio, prio, strict=True)])),
        "german_share": float(np.mean(np.array(t.column("language").to_pylist()) == "de")),
    }  # fmt: skip


def _under_predicted_breach(cases: pa.Table) -> float:
    """SLA breach rate of the cases whose priority the text model put lower than the truth."""
    rank = {p: i for i, p in enumerate(PRIORITIES)}
    seen, true = cases.column("priority").to_pylist(), cases.column("true_priority").to_pylist()
    under = np.array([rank[a] < rank[b] for a, b in zip(seen, true, strict=True)])
    breached = np.array(cases.column("breached").to_pylist())
    return float(breached[under].mean()) if under.any() else float("nan")


def run(configs: list[str], seeds: list[int]) -> tuple[dict[str, Any], list[pa.Table]]:
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="routing-sim-") as tmp:
        text, trained = train_text(Path(tmp) / "model")
        worlds: dict[str, Any] = {}
        kept: list[pa.Table] = []
        for name in configs:
            per_seed = []
            for seed in seeds:
                week = build_week(text, name, seed)
                entry: dict[str, Any] = {"seed": seed, "cases": week.cases.num_rows,
                                         "text": text_scores(week), "routers": {}}  # fmt: skip
                for router in ROUTERS:
                    t0 = time.perf_counter()
                    res = run_week(week, router)
                    s = res.summary()
                    s["seconds"] = time.perf_counter() - t0
                    s["under_predicted_priority_breach"] = _under_predicted_breach(res.cases)
                    entry["routers"][router] = s
                    if name == configs[0] and seed == seeds[0] and router in PARQUET_ROUTERS:
                        t = res.cases.select(list(CASE_COLUMNS))
                        kept.append(t.append_column("router", pa.array([router] * t.num_rows)))
                    print(f"{name} seed {seed} {router}: mean {s['mean_h']:.2f} h, p90 "
                          f"{s['p90_h']:.2f} h, SLA breach {s['sla_breach']:.1%}, "
                          f"{s['seconds']:.1f} s", flush=True)  # fmt: skip
                per_seed.append(entry)
            worlds[name] = {"config": vars(CONFIGS[name]) | {"customers": list(
                CONFIGS[name].customers)}, "seeds": per_seed, "mean": _mean(per_seed)}  # fmt: skip
    return {
        "command": "python -m benchmarks.routing_sim",
        "text_model": trained,
        "worlds": worlds,
        "world": _parameters(),
        "seconds": time.perf_counter() - t_start,
    }, kept


def _mean(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for r in ROUTERS:
        rows = [e["routers"][r] for e in per_seed]
        out[r] = {m: float(np.mean([x[m] for x in rows])) for m in METRICS}
        out[r]["by_priority"] = {
            p: {m: float(np.nanmean([x["by_priority"][p][m] for x in rows]))
                for m in ("mean_h", "p90_h", "sla_breach", "open")}
            for p in PRIORITIES
        }  # fmt: skip
        out[r]["under_predicted_priority_breach"] = float(
            np.nanmean([x["under_predicted_priority_breach"] for x in rows])
        )
    return out


def _parameters() -> dict[str, Any]:
    return {
        "sla_s": wa.SLA_S, "hourly_arrival_weights_utc": HOURLY, "weekday_factor": WEEKDAY,
        "shifts_utc_minutes": {"early": wa.EARLY, "late": wa.LATE}, "base_handle_s":
        wa.BASE_HANDLE_S, "level_factor": wa.LEVEL_FACTOR[1:], "noise_sigma": wa.NOISE_SIGMA,
        "speed_sigma": wa.SPEED_SIGMA, "triage_s": wa.TRIAGE_S,
        "language_triage_s": wa.LANGUAGE_TRIAGE_S, "prior_experience": wa.PRIOR_EXPERIENCE[1:],
    }  # fmt: skip


def _hours(shift: tuple[int, int]) -> str:
    return "-".join(f"{m // 60:02d}:{m % 60:02d}" for m in shift)


def _cell(values: list[float], fmt: str) -> str:
    mean = float(np.mean(values))
    return f"{mean:{fmt}} ({', '.join(f'{v:{fmt}}' for v in values)})"


def markdown(r: dict[str, Any], machine: dict[str, Any], parquet: dict[str, Any]) -> str:
    p = r["world"]
    sla = ", ".join(f"{k} {v / 3600:g} h" for k, v in p["sla_s"].items())
    out = [
        "# Routing simulation: a working week, four routers on the same arrivals",
        "",
        f"`{r['command']}` on {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores "
        f"(shared), {machine.get('date', '')}; {r['seconds']:.0f} s in all.",
        "",
        "Each world (configuration x seed) is one Monday-Friday week of `engine.routing.workday`; "
        "every router runs on the same arrivals, cases, agents and noise. Figures are the mean "
        "over seeds, the seeds' own values in brackets. Resolution is wall time from creation "
        "to final resolution (rework included) over the cases resolved by Saturday 00:00 UTC; a "
        "case still open then breaches if its SLA had passed. Utilisation is slot time worked "
        "on shift over capacity x shift time; overtime is slot time worked after a shift ended "
        "(agents finish the cases in hand). Rework: a case sent back (an agent without its "
        "true skill or language) or failing its quality check, at least once.",
        "",
        f"SLAs (wall time, by the case's true priority): {sla}. The routers see the priority "
        "and category the text model predicts; breaches are counted against the true priority "
        "(the last column of the priority tables: the breach rate of the cases whose priority "
        "the model put lower than the truth). Means and p90 leave out the cases still open, so "
        "a router that leaves more open is flattered by them: read them with `open at end`.",
        "",
    ]
    for name, w in r["worlds"].items():
        cfg, seeds = w["config"], w["seeds"]
        tx = [e["text"] for e in seeds]
        out += [
            f"## World `{name}`",
            "",
            f"case_sim text `{cfg['text_config']}`, {cfg['agents']} agents "
            f"({cfg['german_speakers']:.0%} speak German), {cfg['cases_per_day']:g} expected "
            f"cases a Tuesday; cases per week: {', '.join(str(e['cases']) for e in seeds)} "
            f"(seeds {', '.join(str(e['seed']) for e in seeds)}); German cases "
            f"{np.mean([t['german_share'] for t in tx]):.0%}.",
            "",
            f"Text model on the week's cases (not its training sample): macro-F1 "
            f"{_cell([t['macro_f1'] for t in tx], '.3f')}, accuracy "
            f"{_cell([t['accuracy'] for t in tx], '.3f')}, sent to GENERAL "
            f"{np.mean([t['general_share'] for t in tx]):.1%}; priority accuracy "
            f"{np.mean([t['priority_accuracy'] for t in tx]):.3f}, priority put too low "
            f"{np.mean([t['priority_under_predicted'] for t in tx]):.1%} of cases.",
            "",
            "| router | mean resolution (h) | p90 (h) | SLA breach | utilisation | rework | "
            "open at end | overtime (h) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for rt in ROUTERS:
            rows = [e["routers"][rt] for e in seeds]

            def col(m: str, fmt: str, rows: list[dict[str, Any]] = rows) -> str:
                return _cell([x[m] for x in rows], fmt)

            out.append(
                f"| {rt} | {col('mean_h', '.2f')} | {col('p90_h', '.2f')} | "
                f"{col('sla_breach', '.1%')} | {col('utilisation', '.1%')} | "
                f"{col('rework', '.1%')} | {col('open', '.0f')} | {col('overtime_h', '.0f')} |"
            )
        out += ["", "By true priority (mean over seeds): mean resolution h / p90 h / SLA breach.",
                "", "| router | " + " | ".join(PRIORITIES) + " | breach, priority put too low |",
                "|---|" + "---|" * (len(PRIORITIES) + 1)]  # fmt: skip
        for rt in ROUTERS:
            m = w["mean"][rt]
            cells = [f"{b['mean_h']:.2f} / {b['p90_h']:.2f} / {b['sla_breach']:.1%}"
                     for b in (m["by_priority"][q] for q in PRIORITIES)]  # fmt: skip
            under = m["under_predicted_priority_breach"]
            out.append(f"| {rt} | " + " | ".join(cells) + f" | {under:.1%} |")
        out += ["", "ordersight minus each baseline, per seed (same arrivals):", "",
                "| baseline | SLA breach (points) | mean resolution (h) | p90 (h) |",
                "|---|---|---|---|"]  # fmt: skip
        for b in BASELINES:
            cells = [_diff(seeds, b, m, k) for m, k in (("sla_breach", 100), ("mean_h", 1),
                                                       ("p90_h", 1))]  # fmt: skip
            out.append(f"| {b} | " + " | ".join(cells) + " |")
        out += ["", *_findings(name, seeds), ""]
    out += [
        "## The world",
        "",
        "- Arrivals: a Poisson process, its rate constant within each UTC hour, relative rates "
        + ", ".join(f"{h}:00 {v:g}" for h, v in p["hourly_arrival_weights_utc"].items())
        + f" (none at night); weekday factors Mon-Fri {', '.join(map(str, p['weekday_factor']))}.",
        "- Cases: case_sim's subject, body, true queue and priority, order facts; customers "
        "drawn per tier (new / standard / key pools, key accounts recurring most), so a "
        "customer's tier never changes; customer_orders = earlier orders.",
        f"- Shifts (UTC): early {_hours(wa.EARLY)} (55% of agents), late {_hours(wa.LATE)}, "
        "Monday to Friday; capacities 1-3 from a fixed mix; specialists (2 skills), broad "
        "agents (3-4) and generalists (5-7 and GENERAL), skills drawn in proportion to the "
        "default mix's work; every skill covered on each shift in each language.",
        "- True handle time = base[category] x level factor x learning x agent speed x order "
        "difficulty x exp(noise). Base (s): "
        + ", ".join(f"{k} {v:g}" for k, v in p["base_handle_s"].items())
        + f"; level factor (1..5) {', '.join(f'{x:g}' for x in p['level_factor'])}; learning "
        "0.7 + 0.3 / sqrt(1 + n/8) after n completed cases in the category (prior n by level: "
        + ", ".join(f"{lo}-{hi}" for lo, hi in p["prior_experience"])
        + f"); agent speed log-normal sigma {p['speed_sigma']}; noise sigma {p['noise_sigma']}; "
        "difficulty from amount, key account, new customer, built-to-order SKU (suffix R/X), "
        "quantity >= 100, repeat customer (>= 20 orders).",
        "- P(resolved right first time) = min(0.78 + 0.035 level + 0.06 (1 - exp(-n/40)), 0.98); "
        "a failed case comes back once, at once.",
        f"- Triage: {p['triage_s']:g} s for a case outside the agent's skills (it then knows the "
        f"true category), {p['language_triage_s']:g} s for a language it does not speak; the "
        "baselines do not give a case back to an agent who returned it.",
        "- Baselines treat the case's language as a skill (round-robin ignores both) and wait "
        "in a FIFO queue per predicted category. ordersight is `Router(RouterConfig(sla_s=...))` "
        "with its defaults otherwise (agent_queue_max 1: a case may wait for a busy agent; such "
        "cases go back to be routed when the agent's shift ends, `release`), cold: no history "
        "before Monday; it learns from each completion (`complete`: handle time, quality 1 or "
        "0) and each case sent back (`bounce`, as the Routing service's CompleteCase with "
        "rework), and from nothing the world hides.",
        f"- Text model: trained on {r['text_model']['cases']:,} `default` cases (case_sim seed "
        f"{r['text_model']['seed']}), confidence threshold {r['text_model']['threshold']:.3f}.",
        "",
        f"`routed_cases.parquet`: {parquet['rows']:,} rows ({parquet['bytes'] / 1e6:.2f} MB), "
        f"the `{parquet['world']}` world seed {parquet['seed']} under "
        f"{' and '.join(PARQUET_ROUTERS)}, the columns of routing_cases plus `router`; "
        "category, priority and sla_s are what the router saw (after any correction by an "
        "agent), predicted_* are NaN for round-robin, which estimates nothing; a case_id "
        "appears once per router.",
    ]
    return "\n".join(out) + "\n"


def _diff(seeds: list[dict[str, Any]], baseline: str, m: str, scale: float) -> str:
    d = [(e["routers"]["ordersight"][m] - e["routers"][baseline][m]) * scale for e in seeds]
    return ", ".join(f"{x:+.2f}" for x in d)


def _findings(name: str, seeds: list[dict[str, Any]]) -> list[str]:
    """Where ordersight wins and loses against the best baseline on each seed."""
    out = []
    for m, label, scale, unit in (("sla_breach", "SLA breach rate", 100, " points"),
                                  ("mean_h", "mean resolution", 1, " h"),
                                  ("p90_h", "p90 resolution", 1, " h")):  # fmt: skip
        wins = 0
        gaps = []
        for e in seeds:
            best = min(e["routers"][b][m] for b in BASELINES)
            gap = (e["routers"]["ordersight"][m] - best) * scale
            gaps.append(gap)
            wins += gap < 0
        out.append(
            f"- {label}: ordersight below the best baseline on {wins} of {len(seeds)} seeds "
            f"(difference {', '.join(f'{g:+.2f}' for g in gaps)}{unit})."
        )
    return out


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(r["worlds"])
    panels = (("mean_h", "mean resolution (h)", 1), ("p90_h", "p90 resolution (h)", 1),
              ("sla_breach", "SLA breach rate (%)", 100))  # fmt: skip
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    width = 0.8 / len(ROUTERS)
    for ax, (m, title, scale) in zip(axes, panels, strict=True):
        vals = {rt: [[e["routers"][rt][m] * scale for e in r["worlds"][n]["seeds"]]
                     for n in names] for rt in ROUTERS}  # fmt: skip
        # round-robin is far off the others' scale: its bars are cut and labelled
        top = 1.25 * max(max(max(v) for v in vals[rt]) for rt in ROUTERS[1:])
        for k, rt in enumerate(ROUTERS):
            x = np.arange(len(names)) + (k - (len(ROUTERS) - 1) / 2) * width
            means = [float(np.mean(v)) for v in vals[rt]]
            ax.bar(x, [min(v, top) for v in means], width, label=rt)
            for xi, v, mean in zip(x, vals[rt], means, strict=True):
                ax.plot([xi] * len(v), [min(y, top) for y in v], "k.", markersize=3)
                if mean > top:
                    ax.text(xi, top * 0.97, f"{mean:.0f}", ha="center", va="top", fontsize=8,
                            rotation=90, color="white")  # fmt: skip
        ax.set_ylim(0, top)
        ax.set_xticks(np.arange(len(names)), names)
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.suptitle("Four routers on the same simulated weeks (bars: mean over seeds; dots: seeds; "
                 "round-robin's bars cut at the top, its mean written in)")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.run import machine

    p = argparse.ArgumentParser(prog="python -m benchmarks.routing_sim", description=__doc__)
    p.add_argument("--configs", default="default,shifted", help="worlds, comma-separated")
    p.add_argument("--seeds", default="0,1,2", help="seeds, comma-separated")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/routing"))
    args = p.parse_args(argv)
    configs = [c.strip() for c in args.configs.split(",")]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        p.error(f"--configs: {unknown[0]!r} is not one of {', '.join(CONFIGS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    r, kept = run(configs, seeds)
    defaults = p.parse_args([])
    extra = [f"--{k} {v}" for k, v in vars(args).items()
             if k != "out" and v != getattr(defaults, k)]  # fmt: skip
    r["command"] = " ".join([r["command"], *extra])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = pa.concat_tables(kept)
    pq.write_table(table, out / "routed_cases.parquet", compression="zstd")
    parquet = {"rows": table.num_rows, "bytes": (out / "routed_cases.parquet").stat().st_size,
               "world": configs[0], "seed": seeds[0], "routers": list(PARQUET_ROUTERS)}  # fmt: skip
    r["parquet"] = parquet
    m = machine()
    (out / "simulation.json").write_text(json.dumps({"machine": m, **r}, indent=2) + "\n")
    (out / "simulation.md").write_text(markdown(r, m, parquet))
    plot(r, out / "simulation.png")
    print((out / "simulation.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
