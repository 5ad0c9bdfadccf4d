"""Benchmark of the daily build: figures and ratios, printed (never asserted).

    python bench/bench_build.py --sizes 1000000 10000000

For every size N (generated interactions over 7 days, with form entries and SSO links scaled so
that N = 10M carries about 1M form entries and 330k SSO links):

- history load: every partition but the last extracted, validated and enriched (what the earlier
  daily runs left in the warehouse; identity and profiles of those runs are not needed, as every
  run recomputes them from the data);
- daily build: ``run_all`` for the last date: that day's partitions, then identity resolution
  as of the day and the day before (merges), profiles over the whole history, quality checks and
  the Parquet export of every output table. This is "the full daily build";
- rebuild: history load + daily build, i.e. everything from raw landing files;
- lower bound: one bare DuckDB query that reads every interaction landing file, joins element
  content and writes one CSV;
- pandas: bench/pandas_reference.py, the same build done the straightforward pandas way (from raw
  files, like the rebuild);

and once: identity resolution alone on 5M synthetic links (``--edges``).

``--days 7 14 28 56`` measures each size (then a week's volume) over longer histories at the same
daily rate, and prints how the daily build grows with the history before the day.

Every measured step runs in a child process, so its peak RSS (ru_maxrss) is its own. The
warehouse's DuckDB and the lower bound's get ``--memory-limit`` (default 1536MB) and ``--threads``
(default 2); the landing extract's in-memory DuckDBs keep their own limit (768MB each).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))
sys.path.insert(0, str(ROOT / "bench"))

# 10M interactions -> ~1.33M people: these shares give ~1M form entries and ~330k SSO links.
IDENTIFIED_SHARE = 0.535
SIGNED_IN_SHARE = 0.18
IDENTITY_YML = ROOT / "include" / "config" / "identity.yml"
WEEK = 7  # the benchmark: a size's interactions over 7 days


# --- children: one measured step each ------------------------------------------------------


def _config(work: Path, memory_limit: str, threads: int):
    import yaml

    from audience_profiles.config import load_config

    path = work / "pipeline.yml"
    path.write_text(
        yaml.safe_dump(
            {
                "start_date": "2022-01-11",
                "landing_root": str(work.parent / "landing"),
                "work_dir": str(work / "work"),
                "warehouse": {
                    "path": str(work / "warehouse.duckdb"),
                    "memory_limit": memory_limit,
                    "threads": threads,
                },
                "identity_config": str(IDENTITY_YML),
                "destinations": [],
            }
        )
    )
    return load_config(path)


def child_generate(a: dict) -> dict:
    from audience_profiles.generate import GenerateOptions, generate

    counts = generate(
        GenerateOptions(
            out=Path(a["landing"]),
            interactions=a["size"],
            days=a["days"],
            identified_share=IDENTIFIED_SHARE,
            signed_in_share=SIGNED_IN_SHARE,
        )
    )
    return {"counts": counts}


def child_load(a: dict) -> dict:
    from audience_profiles import landing, pipeline
    from audience_profiles.generate import data_dates

    config = _config(Path(a["work"]), a["memory_limit"], a["threads"])
    for ds in data_dates(config.landing_root)[:-1]:
        window = pipeline.RunWindow.for_date(ds)
        staged = [pipeline.extract_source(s, window, config) for s in landing.SOURCES]
        pipeline.validate(window, staged, config)
        pipeline.enrich(window, config)
        shutil.rmtree(pipeline.run_dir(config, window), ignore_errors=True)
    return {}


def _wall_seconds(intervals: list[tuple[float, float]]) -> float:
    """Seconds covered by the intervals: calls that overlap (run_all's extracts) count once."""
    covered, reached = 0.0, float("-inf")
    for start, end in sorted(intervals):
        covered += max(0.0, end - max(start, reached))
        reached = max(reached, end)
    return covered


def child_daily(a: dict) -> dict:
    from audience_profiles import pipeline
    from audience_profiles.generate import data_dates

    config = _config(Path(a["work"]), a["memory_limit"], a["threads"])
    spans: dict[str, list[tuple[float, float]]] = {}
    for name in (
        "extract_source",
        "validate",
        "enrich",
        "resolve_identities",
        "build_profiles",
        "check_quality",
        "publish",
        "cleanup",
    ):
        original = getattr(pipeline, name)

        def timed(*args, _original=original, _name=name, **kwargs):
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                spans.setdefault(_name, []).append((start, time.perf_counter()))

        setattr(pipeline, name, timed)  # run_all looks its steps up in the module
    ds = data_dates(config.landing_root)[-1]
    result = pipeline.run_all(pipeline.RunWindow.for_date(ds), config)
    return {
        "ds": ds,
        "steps": {name: _wall_seconds(intervals) for name, intervals in spans.items()},
        "identity": result["identity"],
        "profiles": result["profiles"],
    }


def child_lower_bound(a: dict) -> dict:
    import duckdb

    landing, out = Path(a["landing"]), Path(a["work"]) / "lower_bound.csv"
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{a['memory_limit']}'; SET threads = {a['threads']}")
    columns = (
        "{'date': 'VARCHAR', 'event_id': 'VARCHAR', 'poll_id': 'VARCHAR', "
        "'session_id': 'VARCHAR', 'option': 'VARCHAR', 'votes': 'VARCHAR'}"
    )
    rows = con.execute(
        f"""
        COPY (
            SELECT i.date, i.event_id, i.poll_id, i.session_id, i.option, i.votes,
                   e.title, e.option_label
            FROM (
                SELECT * FROM read_csv('{landing}/interactions/*/*.csv', all_varchar = true)
                UNION ALL BY NAME
                SELECT * FROM read_json('{landing}/interactions/*/*.json',
                                        format = 'newline_delimited', columns = {columns})
            ) i
            LEFT JOIN read_csv('{landing}/elements/*.csv', all_varchar = true) e
              ON e.poll_id = i.poll_id AND e.option = i.option
        ) TO '{out}' (HEADER true)
        """
    ).fetchone()[0]
    out.unlink()
    return {"rows": rows}


def child_pandas(a: dict) -> dict:
    import pandas_reference

    from audience_profiles.generate import data_dates
    from audience_profiles.identity import load_rules

    ds = data_dates(a["landing"])[-1]
    rows = pandas_reference.build(
        a["landing"], ds, str(Path(a["work"]) / "pandas"), load_rules(IDENTITY_YML)
    )
    return {"ds": ds, "rows": rows}


SYNTHETIC_LINKS = """
-- people with 1-3 sessions; one form entry per session (3% enter someone else's email, which
-- chains people together); 40% sign in on their sessions, half of them sharing their email
CREATE OR REPLACE TEMP TABLE bench_people AS
SELECT range AS p, 1 + hash(range, 'sessions') % 3 AS k FROM range({people});
CREATE OR REPLACE TEMP TABLE bench_sessions AS
SELECT p, i, md5(CAST(p AS VARCHAR) || '-' || CAST(i AS VARCHAR)) AS session_id
FROM bench_people, range(3) r(i) WHERE i < k;
INSERT INTO form_entries
SELECT DATE '2022-04-25' + CAST(hash(p, i, 'day') % 7 AS INTEGER),
       TIMESTAMP '2022-04-25 00:00:00' + INTERVAL 1 SECOND * CAST(hash(p, i, 'at') % 604800 AS BIGINT),
       'First', 'Last',
       'fan' || CAST(CASE WHEN hash(p, i, 'mix') % 100 < 3 THEN hash(p, i, 'other') % {people} ELSE p END AS VARCHAR) || '@example.com',
       NULL, TRUE, NULL, TRUE, session_id, 'Win a Signed Shirt', 29, 'bench/form_entries.csv',
       row_number() OVER ()
FROM bench_sessions;
INSERT INTO identities
SELECT DATE '2022-04-25' + CAST(hash(p, i, 'sso-day') % 7 AS INTEGER),
       TIMESTAMP '2022-04-25 00:00:00' + INTERVAL 1 SECOND * CAST(hash(p, i, 'sso-at') % 604800 AS BIGINT),
       session_id, 'sso-' || CAST(p AS VARCHAR),
       CASE WHEN hash(p, 'share') % 2 = 0 THEN 'fan' || CAST(p AS VARCHAR) || '@example.com' END,
       NULL, NULL, 'bench/identities.json', row_number() OVER ()
FROM bench_sessions WHERE hash(p, 'signed-in') % 100 < 40;
"""


def child_identity(a: dict) -> dict:
    from audience_profiles import identity
    from audience_profiles.config import WarehouseConfig
    from audience_profiles.warehouse.duckdb import DuckDBWarehouse

    work = Path(a["work"])
    work.mkdir(parents=True, exist_ok=True)
    path = work / "identity.duckdb"
    path.unlink(missing_ok=True)
    wh = DuckDBWarehouse(
        WarehouseConfig(path=str(path), memory_limit=a["memory_limit"], threads=a["threads"])
    )
    wh.run_sql("setup/tables")
    # 2 sessions a person on average, a form entry each, 40% signed in (half sharing their
    # email): ~3.2 links a person
    wh.execute_script(SYNTHETIC_LINKS.format(people=int(a["edges"] / 3.2)))
    links = wh.query(
        "SELECT (SELECT count(*) FROM form_entries) + (SELECT count(*) FROM identities)"
        " + (SELECT count(email) FROM identities)"
    )[0][0]
    wh.execute_script("DROP TABLE bench_people; DROP TABLE bench_sessions; CHECKPOINT")
    rules = identity.load_rules(IDENTITY_YML)
    seconds: dict[str, float] = {}

    def timed(name: str, original):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            result = original(*args, **kwargs)
            seconds.setdefault(name, time.perf_counter() - start)  # the first call: one snapshot
            return result

        return wrapper

    identity.connected_components = timed("components", identity.connected_components)
    # the graph alone: link rules, edges, components and labels, before limits and ids
    identity.label_as_of = timed("graph", identity.label_as_of)
    # the merge history of a run: search, relaxation rounds and the rows (resolve_run calls it)
    identity.record_merges = timed("merges", identity.record_merges)
    wh.execute_script("CREATE SCHEMA IF NOT EXISTS bench")
    start = time.perf_counter()
    stats = identity.resolve_as_of(wh, "bench", rules, "2022-05-01", "2022-05-02 00:00:00")
    one_snapshot = time.perf_counter() - start
    start = time.perf_counter()
    run = identity.resolve_run(
        wh, "bench", rules, "2022-05-01", "2022-05-01 00:00:00", "2022-05-02 00:00:00"
    )
    whole_run = time.perf_counter() - start
    wh.close()
    path.unlink()
    return {
        "links": links,
        "snapshot_seconds": one_snapshot,
        "run_seconds": whole_run,
        "components_seconds": seconds["components"],
        "graph_seconds": seconds["graph"],
        "merges_seconds": seconds["merges"],
        "nodes": stats.nodes,
        "accepted_links": stats.edges,
        "rounds": stats.rounds,
        "jumps": stats.jumps,
        "split_profiles": stats.split_profiles,
        "profiles": run["profiles"],
        "merges": run["merges"],
        "links_rejected": run["links_rejected"],
    }


CHILDREN = {
    "generate": child_generate,
    "load": child_load,
    "daily": child_daily,
    "lower_bound": child_lower_bound,
    "pandas": child_pandas,
    "identity": child_identity,
}


def run_child(role: str, **args) -> dict:
    """Run one step in a fresh interpreter; return its result, wall time and peak RSS."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", role, json.dumps(args)],
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if proc.returncode:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{role} failed (exit {proc.returncode})")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = seconds
    return result


# --- verification: the pandas reference and the SQL build agree ----------------------------


def verify(work: Path, ds: str) -> dict:
    from pandas_reference import compare_exports

    checks = {
        "profile_identifiers": "identifier_type, identifier_value, profile_id",
        "audience_profiles": "profile_id, email, external_id, first_name, last_name, optin_1, "
        "optin_2, accept_terms, sessions, interactions, answers",
        "profile_merges": "merged_profile_id, surviving_profile_id, reason",
        "audience_profile_interactions": "profile_id, session_id, poll_id, interaction_date, option",
        "identity_link_audit": "rule, file, line",
    }
    compared = compare_exports(work / "work" / "runs" / ds / "export", work / "pandas", checks)
    return {t: {"rows": c["rows"], "differing": c["differing"]} for t, c in compared.items()}


# --- main ----------------------------------------------------------------------------------


def repeated(times: int, measure, before=None) -> dict:
    """Run ``measure`` ``times`` times; the run with the median wall time, with every run's time
    in ``runs`` (on this VM, runs minutes apart differ by 5-15%, hours apart by up to a third)."""
    results = []
    for _ in range(times):
        if before:
            before()
        results.append(measure())
    results.sort(key=lambda r: r["wall_seconds"])
    median = results[len(results) // 2]
    return median | {"runs": [r["wall_seconds"] for r in results]}


def warehouse_restorer(work: Path):
    """Keep the warehouse file as it is now; the returned function puts that copy back."""
    warehouse = work / "warehouse.duckdb"
    kept = work / "warehouse.after_load.duckdb"
    shutil.copy(warehouse, kept)

    def restore() -> None:
        shutil.copy(kept, warehouse)

    return restore


def runs_note(result: dict) -> str:
    runs = result.get("runs", [])
    return (
        f"  (median of {len(runs)}: {', '.join(f'{r:.1f}' for r in runs)})" if len(runs) > 1 else ""
    )


def mib(kib: int) -> float:
    return kib / 1024


def fmt(seconds: float) -> str:
    return f"{seconds:8.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[1_000_000],
        help="interactions a week: each size is generated over --days days at that rate",
    )
    parser.add_argument(
        "--days",
        type=int,
        nargs="+",
        default=[WEEK],
        help="days of history (default 7, the issue's benchmark); several: the daily build's "
        "growth with its history at each size's weekly rate",
    )
    parser.add_argument(
        "--edges", type=int, default=5_000_000, help="identity-alone links (0: skip)"
    )
    parser.add_argument("--work", default="/tmp/audience-profiles-bench")
    parser.add_argument("--memory-limit", default="1536MB")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--pandas-max",
        type=int,
        default=1_000_000,
        help="largest size the pandas reference runs at (it needs ~1.5-1.8 GiB of RAM per million "
        "interactions: 15 GiB at 10M)",
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="compare the pandas reference's tables with the SQL build's",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the daily build and the lower bound this many times and report the median",
    )
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        role, payload = args.child
        result = CHILDREN[role](json.loads(payload))
        result["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps(result, default=str))
        return

    common = {"memory_limit": args.memory_limit, "threads": args.threads}
    report = {"settings": vars(args) | {"child": None}, "sizes": {}}
    for weekly, days in ((w, d) for w in args.sizes for d in args.days):
        size = weekly * days // WEEK  # interactions over the whole history
        label = str(size) if days == WEEK else f"{size}/{days}d"
        tag = f"[{size:,}]" if days == WEEK else f"[{size:,} over {days} days]"
        base = Path(args.work) / (f"n{size}" if days == WEEK else f"n{size}-{days}d")
        landing, work = base / "landing", base / "build"
        marker = base / "generated.json"
        spec = {
            "size": size,
            "identified_share": IDENTIFIED_SHARE,
            "signed_in_share": SIGNED_IN_SHARE,
        } | ({} if days == WEEK else {"days": days})
        if not marker.exists() or json.loads(marker.read_text()).get("spec") != spec:
            print(f"{tag} generating sample data ...", flush=True)
            generated = run_child("generate", landing=str(landing), size=size, days=days)
            marker.write_text(json.dumps({"spec": spec, "counts": generated["counts"]}))
        counts = json.loads(marker.read_text())["counts"]
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        row = {"interactions": size, "days": days, "weekly": weekly, "counts": counts}
        print(f"{tag} {counts}", flush=True)
        row["load"] = run_child("load", work=str(work), **common)
        print(f"{tag} history load {fmt(row['load']['wall_seconds'])}", flush=True)
        row["daily"] = repeated(
            args.repeat,
            partial(run_child, "daily", work=str(work), **common),
            # every repetition starts from the warehouse as the history load left it
            before=warehouse_restorer(work) if args.repeat > 1 else None,
        )
        print(f"{tag} daily build  {fmt(row['daily']['wall_seconds'])}", flush=True)
        row["lower_bound"] = repeated(
            args.repeat,
            partial(run_child, "lower_bound", landing=str(landing), work=str(work), **common),
        )
        print(f"{tag} lower bound  {fmt(row['lower_bound']['wall_seconds'])}", flush=True)
        if size <= args.pandas_max:
            row["pandas"] = run_child("pandas", landing=str(landing), work=str(work))
            print(f"{tag} pandas       {fmt(row['pandas']['wall_seconds'])}", flush=True)
            if args.verify:
                row["verify"] = verify(work, row["daily"]["ds"])
        report["sizes"][label] = row
    if args.edges:
        print(f"[identity] {args.edges:,} links ...", flush=True)
        report["identity"] = run_child(
            "identity", work=str(Path(args.work) / "identity"), edges=args.edges, **common
        )
    print_report(report)
    out = Path(args.work) / "report.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nfull figures: {out}")


def print_report(report: dict) -> None:
    print("\n=== daily build (seconds, peak RSS MiB) ===")
    for row in report["sizes"].values():
        load, daily, lower = row["load"], row["daily"], row["lower_bound"]
        rebuild = load["wall_seconds"] + daily["wall_seconds"]
        c = row["counts"]
        print(
            f"\n{row['interactions']:,} interactions over {row['days']} days "
            f"({c['form_entries']:,} form entries, {c['identities']:,} SSO links), "
            f"daily run for {daily['ds']}"
        )
        print(
            f"  history load (earlier partitions) {fmt(load['wall_seconds'])}  "
            f"{mib(load['peak_rss_kib']):7.0f} MiB"
        )
        print(
            f"  daily build (run_all)             {fmt(daily['wall_seconds'])}  "
            f"{mib(daily['peak_rss_kib']):7.0f} MiB{runs_note(daily)}"
        )
        for step, seconds in daily["steps"].items():
            print(f"      {step:28s}  {fmt(seconds)}")
        print(f"  rebuild (load + daily)            {fmt(rebuild)}")
        print(
            f"  lower bound (scan+join+CSV)       {fmt(lower['wall_seconds'])}  "
            f"{mib(lower['peak_rss_kib']):7.0f} MiB{runs_note(lower)}"
        )
        print(
            f"  ratio daily / lower bound         {daily['wall_seconds'] / lower['wall_seconds']:8.2f}x"
        )
        print(f"  ratio rebuild / lower bound       {rebuild / lower['wall_seconds']:8.2f}x")
        if "pandas" in row:
            pandas = row["pandas"]
            print(
                f"  pandas reference (from raw files) {fmt(pandas['wall_seconds'])}  "
                f"{mib(pandas['peak_rss_kib']):7.0f} MiB"
            )
            print(
                f"  speed-up vs pandas: daily {pandas['wall_seconds'] / daily['wall_seconds']:6.1f}x, "
                f"rebuild {pandas['wall_seconds'] / rebuild:6.1f}x"
            )
        if "verify" in row:
            for table, v in row["verify"].items():
                print(f"  verify {table:30s} {v['rows']:>9,} rows, {v['differing']} differing")
    if "identity" in report:
        i = report["identity"]
        print(f"\n=== identity resolution alone: {i['links']:,} links ===")
        print(
            f"  nodes {i['nodes']:,}, accepted links {i['accepted_links']:,}, rounds "
            f"{i['rounds']}, jumps {i['jumps']}, profiles split by the limit "
            f"{i['split_profiles']:,}, profiles {i['profiles']:,}"
        )
        print(f"  connected components            {fmt(i['components_seconds'])}")
        print(f"  graph (rules .. labels)         {fmt(i['graph_seconds'])}")
        print(f"  one snapshot (rules .. ids)     {fmt(i['snapshot_seconds'])}")
        print(f"  a run's identity (2 snapshots, audit, merges) {fmt(i['run_seconds'])}")
        print(f"  within it, the merge history    {fmt(i['merges_seconds'])}")
        print(f"  peak RSS (load + both)          {mib(i['peak_rss_kib']):8.0f} MiB")
    print_growth(report)
    print_targets(report)


# the day's own work, which does not grow with the history before it
DAYS_OWN_STEPS = ("extract_source", "validate", "enrich")


def print_growth(report: dict) -> None:
    """Per weekly rate measured over several history lengths: how the daily build grows."""
    by_rate: dict[int, list[dict]] = {}
    for row in report["sizes"].values():
        by_rate.setdefault(row["weekly"], []).append(row)
    for weekly, rows in by_rate.items():
        if len(rows) < 2:
            continue
        rows.sort(key=lambda r: r["days"])
        first = rows[0]["daily"]["wall_seconds"]
        print(f"\n=== the daily build as history grows: {weekly:,} interactions a week ===")
        print(
            f"  {'days':>4}  {'interactions':>12}  {'daily':>10}  ({'day own':>10}  "
            f"{'identity':>8}  {'profiles':>8}  {'publish':>8})  {'lower':>10}  "
            f"{'daily/lower':>11}  {'daily/first':>14}"
        )
        for r in rows:
            steps, daily = r["daily"]["steps"], r["daily"]["wall_seconds"]
            own = sum(steps.get(s, 0.0) for s in DAYS_OWN_STEPS)
            lower = r["lower_bound"]["wall_seconds"]
            print(
                f"  {r['days']:4d}  {r['interactions']:12,}  {fmt(daily)}  ({fmt(own)}  "
                f"{steps.get('resolve_identities', 0.0):8.1f}  {steps.get('build_profiles', 0.0):8.1f}"
                f"  {steps.get('publish', 0.0):8.1f})  {fmt(lower)}  {daily / lower:10.2f}x"
                f"  {daily / first:13.2f}x"
            )


def print_targets(report: dict) -> None:
    """The issue's targets next to the figures (informational: nothing here fails)."""
    print("\n=== targets (figures, not asserts) ===")
    # the targets are the benchmark: interactions over 7 days
    sizes = {r["interactions"]: r for r in report["sizes"].values() if r["days"] == WEEK}
    if report["sizes"] and not sizes:
        print(f"  (the size targets are for {WEEK} days of history: none measured)")
    if sizes:
        size, row = max(sizes.items())
        daily = row["daily"]["wall_seconds"]
        ratio = daily / row["lower_bound"]["wall_seconds"]
        print(f"  {size:,}: daily build within 2x of the lower bound: {ratio:.2f}x")
        rss = mib(row["daily"]["peak_rss_kib"])
        print(f"  {size:,}: daily build peak RSS under 2 GiB: {rss:.0f} MiB")
        for k, r in sizes.items():
            if "pandas" in r:
                speedup = r["pandas"]["wall_seconds"] / r["daily"]["wall_seconds"]
                print(f"  {k:,}: at least 20x faster than pandas: {speedup:.1f}x")
    if "identity" in report:
        i = report["identity"]
        print(
            f"  {i['links']:,} identity links in 10 s or less: components "
            f"{i['components_seconds']:.1f} s, graph with rules {i['graph_seconds']:.1f} s, "
            f"one snapshot {i['snapshot_seconds']:.1f} s"
        )


if __name__ == "__main__":
    main()
