"""`make bench`: the agent measured the way its users would, against what they would use instead.

Prints a table and writes the figures as JSON. `--core N` pins the agent (and the paho ceiling)
to one CPU core with taskset, the way to estimate a Raspberry Pi's one spare core.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import adaptation, cases, fleet, sparkplug
from bench.harness import Models, build_models, machine
from trainer.detectors import DETECTORS

ALGORITHMS = tuple(sorted(DETECTORS))  # every shipped detector
STREAM_ROWS = ("stream_us", "adaptation_us")  # rows `--only` runs besides the drain rows
TARGETS = {
    "drain_ratio_single": 0.70,
    "batched_readings_per_s": 200_000,
    "alert_p99_ms": 10.0,
    "peak_rss_mib": 80.0,
    "startup_s": 1.0,
    "score_us": 20.0,
    "stream_us": 5.0,
}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("var/bench.json"), help="JSON results")
    parser.add_argument("--core", type=int, help="pin the agent to this CPU core (taskset)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument(
        "--only",
        help="comma list of rows to run alone, JSON on stdout: drain_single, "
        "drain_json_paths, drain_value_per_topic (e.g. before/after a change to ingest), "
        "stream_us, adaptation_us (before/after a change to the stream layer)",
    )
    args = parser.parse_args()
    if args.only:
        return _only(args)
    sizes = (
        (2_000, 20_000, 2, 300, 3, 1, 3) if args.quick else (50_000, 500_000, 15, 3000, 5, 3, 50)
    )
    single, batched, seconds, calls, runs, repeats, agents = sizes
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        work = Path(tmp)
        models = build_models(work / "models", ALGORITHMS)
        results = {
            "machine": machine(),
            "pinned_core": args.core,
            "score_us": cases.score_latency(models, calls),
            "stream_us": cases.stream_cost(models, calls),
            "adaptation_us": adaptation.adaptation_cost(models, work / "wide", calls),
            "sklearn_isolation_forest_us": cases.sklearn_baseline(models, calls),
            "drain_single": _median_run(
                lambda: cases.drain(models, work / "drain1", single, 1, args.core), repeats
            ),
            "drain_batched": _median_run(
                lambda: cases.drain(models, work / "drain100", batched, 100, args.core), repeats
            ),
            "sparkplug_drain": sparkplug.drain(models, work / "spb", single, args.core, repeats),
            "sparkplug_decode": sparkplug.decode_us(models, calls * 10),
            "alert_latency_ms": cases.alert_latency(models, work / "lat", 1000, seconds, args.core),
            "startup_s": cases.startup(models, work / "start", runs, args.core),
            "dependency_floor_rss_mib": cases.dependency_floor(models),
            "fleet_push": fleet.group_push(models, work / "fleet", agents),
        }
    results["seconds"] = time.time() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(render(results))
    print(f"\nwritten to {args.out}")
    return 0


def _only(args: argparse.Namespace) -> int:
    """Only the named rows: drain rows on the PCA model, each the median of three runs; the
    stream rows as in the full run (`stream_us` trains every detector, `adaptation_us` only
    `online`)."""
    single, calls = (2_000, 300) if args.quick else (50_000, 3000)
    rows = [name.strip() for name in args.only.split(",") if name.strip()]
    drains = {"drain_single", *(f"drain_{kind}" for kind in cases.SOURCE_CASES)}
    if unknown := sorted(set(rows) - drains - set(STREAM_ROWS)):
        known = sorted(drains | set(STREAM_ROWS))
        raise SystemExit(f"--only: unknown rows {unknown}; known: {known}")
    needed = {"pca"} if drains & set(rows) else set()
    needed |= set(ALGORITHMS) if "stream_us" in rows else set()
    needed |= {"online"} if "adaptation_us" in rows else set()
    # `--core` pins the drain rows' agent; the stream rows run in this process, unpinned.
    pinned = args.core if drains & set(rows) else None
    results: dict[str, object] = {"machine": machine(), "pinned_core": pinned}
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        work = Path(tmp)
        models = build_models(work / "models", tuple(sorted(needed)))
        for row in rows:
            if row == "stream_us":
                results[row] = cases.stream_cost(models, calls)
            elif row == "adaptation_us":
                results[row] = adaptation.adaptation_cost(models, work / row, calls)
            else:
                results[row] = _only_row(models, work / row, row, single, args.core)
    print(json.dumps(results, indent=2))
    return 0


def _only_row(models: Models, folder: Path, row: str, readings: int, core: int | None) -> dict:
    if row == "drain_single":
        return _median_run(lambda: cases.drain(models, folder, readings, 1, core), 3)
    kind = row.removeprefix("drain_")
    if kind == "value_per_topic":  # as many messages as the other rows: a sensor each
        readings //= 5
    runs = sorted(
        (cases.drain_source(models, folder, readings, kind, core) for _ in range(3)),
        key=lambda r: r["agent_readings_per_s"],
    )
    return {**runs[1], "rates": [round(r["agent_readings_per_s"]) for r in runs]}


def _median_run(run: Callable[[], dict], repeats: int) -> dict:
    """Run a drain case `repeats` times; keep the run with the median agent/ceiling ratio (the
    machine is noisy, and each run measures the agent and its ceiling back to back)."""
    runs = sorted((run() for _ in range(repeats)), key=lambda r: r["ratio"])
    return {**runs[len(runs) // 2], "ratios": [round(r["ratio"], 3) for r in runs]}


def render(r: dict) -> str:
    ours_if = r["score_us"]["isolation_forest"]["median"]
    sk = r["sklearn_isolation_forest_us"]["median"]
    d1, d100 = r["drain_single"], r["drain_batched"]
    lat, start, fp = r["alert_latency_ms"], r["startup_s"], r["fleet_push"]
    rows = [("measure", "median", "p99 / detail", "target")]
    for algorithm, s in r["score_us"].items():
        rows.append((f"score one window, {algorithm} (µs)", f"{s['median']:.1f}", f"{s['p99']:.1f}",
                     f"<= {TARGETS['score_us']:.0f}"))  # fmt: skip
    for algorithm, s in r["stream_us"].items():
        rows.append((f"stream layer per reading, {algorithm} (µs)", f"{s['median']:.2f}",
                     f"{s['p99']:.2f}; {s['batched']:.3f} in blocks of 512; drift "
                     f"{s['drift_us']:.2f} a call, once a second per asset",
                     f"<= {TARGETS['stream_us']:.0f}"))  # fmt: skip
    for sensors, a in r["adaptation_us"].items():
        rows.append((f"adaptation over the online model, {sensors} (µs)", f"{a['adds_us']:.2f}",
                     f"{a['adds_p99']:.2f} p99; {a['batched_adds_us']:.2f} in blocks of 512; "
                     f"layer {a['layer_us']:.1f}, online model alone {a['online_us']:.1f}; "
                     f"state dump {a['dump_us']:.1f} ({a['state_bytes']} bytes)",
                     f"<= {TARGETS['stream_us']:.0f}"))  # fmt: skip
    rows += [
        ("scikit-learn IF score_samples per reading (µs)", f"{sk:.0f}",
         f"ours {sk / ours_if:.0f}x faster", ""),
        ("drain, 1 reading/message (readings/s)", f"{d1['agent_readings_per_s']:,.0f}",
         f"paho ceiling {d1['ceiling_readings_per_s']:,.0f}; ratio {d1['ratio']:.2f} "
         f"(runs {d1['ratios']})",
         f">= {TARGETS['drain_ratio_single']:.2f} of ceiling"),
        ("drain, 100 readings/message (readings/s)", f"{d100['agent_readings_per_s']:,.0f}",
         f"paho ceiling {d100['ceiling_readings_per_s']:,.0f}; ratio {d100['ratio']:.2f}",
         f">= {TARGETS['batched_readings_per_s']:,}"),
        ("drain, Sparkplug B DDATA, 1 reading/message (readings/s)",
         f"{r['sparkplug_drain']['agent_readings_per_s']:,.0f}",
         f"{r['sparkplug_drain']['agent_readings_per_s'] / d1['agent_readings_per_s']:.2f} of "
         f"our JSON's; decoder alone {r['sparkplug_decode']['us_per_message']:.1f} µs/message", ""),
        ("reading-to-alert at 1,000 readings/s (ms)", f"{lat['median']:.2f}",
         f"{lat['p99']:.2f} p99 (n={lat['n']})", f"p99 <= {TARGETS['alert_p99_ms']:.0f}"),
        ("peak RSS while draining (MiB)", f"{max(d1['peak_rss_mib'], d100['peak_rss_mib']):.1f}",
         f"1/msg {d1['peak_rss_mib']:.1f}; 100/msg {d100['peak_rss_mib']:.1f}; idle "
         f"{start['idle_rss_mib']:.1f}; imports + one session {r['dependency_floor_rss_mib']:.1f}",
         f"<= {TARGETS['peak_rss_mib']:.0f}"),
        ("start-up to retained online (s)", f"{start['median']:.2f}", f"{start['p99']:.2f} max",
         f"<= {TARGETS['startup_s']:.1f}"),
        ("SQLite bytes per stored reading", f"{d1['sqlite_bytes_per_reading']:.0f}", "", ""),
        (f"group push to {fp['agents']} agents, all switched (s)", f"{fp['switched_all_s']:.2f}",
         f"median {fp['switched_median_s']:.2f}; all applied {fp['applied_all_s']:.2f} "
         f"(health check {fp['health_check_s']:.0f} s)", ""),
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"bench on {r['machine']}" + (f", agent pinned to core {r['pinned_core']}"
             if r["pinned_core"] is not None else "")]  # fmt: skip
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
