"""The run report: what one run of the daily build read, rejected, built and delivered, and how long
each task took.

Every run leaves it in three places:
- the warehouse table ``pipeline_runs``, one row per (ds, run_id) with the key counts and the whole
  report as JSON (``include/sql/report/pipeline_runs.sql``);
- an HTML page ``<output>/reports/<ds>.html`` with hand-drawn inline SVG plots (no JavaScript, no
  CDN: it opens from a file share or an e-mail attachment), and ``index.html`` for the latest date.
  ``<output>`` is the path of the first local destination, else ``<work_dir>``;
- one log line of key counts in the ``report`` task's log.

The numbers come from the small dicts the tasks return (XCom under Airflow, return values in
``run_all``) and task durations from Airflow's task instances, so reporting never re-reads data.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audience_profiles.config import DEFAULT_DROP_PATH, PipelineConfig, load_config, resolve_path
from audience_profiles.dag_defaults import EXTRACT_SOURCES
from audience_profiles.files import inside, replace_file
from audience_profiles.landing import NAMES_SHOWN, some_names
from audience_profiles.warehouse import open_warehouse

if TYPE_CHECKING:
    from audience_profiles.pipeline import RunWindow

log = logging.getLogger(__name__)

# Upstream tasks whose return values feed the report (mapped ones give one value per map index).
REPORTED_TASKS = (
    "extract",
    "validate",
    "enrich",
    "resolve_identities",
    "build_profiles",
    "build_segments",
    "check_quality",
    "deliver",
)
# The DAG's tasks in pipeline order, for the durations chart.
LANDING_WAIT = "wait_for_landing"  # the daily DAG's first task (operators/wait_for_landing.py)
TASK_ORDER = (  # every task but report itself: tests/dags checks it against the DAG
    LANDING_WAIT,
    "extract",
    "validate",
    "enrich",
    "resolve_identities",
    "build_profiles",
    "build_segments",
    "check_quality",
    "publish",
    "destinations",
    "deliver",
    "cleanup",
)
FAILED_STATES = ("failed", "upstream_failed")
# Dates a page plots over time: a season's worth. Every date would make a page of three years
# half a megabyte of unreadable columns, and a backfill of them write a quarter of a gigabyte.
HISTORY_DATES = 90
COLORS = ("#2b6cb0", "#dd6b20", "#2f855a", "#805ad5", "#c53030", "#718096")


def report_dir(config: PipelineConfig) -> Path:
    """``reports/`` in the first enabled local drop's folder (its ``path``, else the default
    one its files go to), so the pages sit beside the outputs; else under ``work_dir``."""
    for dest in config.enabled_destinations:
        if dest.kind == "local":
            return Path(dest.options.get("path") or resolve_path(DEFAULT_DROP_PATH)) / "reports"
    return Path(config.work_dir) / "reports"


def build(window: RunWindow, outputs: dict[str, Any], tasks: dict[str, dict]) -> dict[str, Any]:
    """The report as a JSON-able dict, from task outputs (any may be missing after a failure)."""
    validated = outputs.get("validate") or {}
    sources = validated.get("sources") or {
        e["source"]: {"read": e["rows"]} for e in outputs.get("extract") or [] if e
    }
    quarantine = [
        {"source": source, "reason": reason, "rows": rows}
        for source, reason, rows in validated.get("quarantine_by_field") or []
    ]
    identity = outputs.get("resolve_identities") or {}
    profiles = outputs.get("build_profiles") or {}
    deliveries = {
        d["destination"]: {
            "kind": d["kind"],
            "rows": sum(d["rows"].values()),
            "tables": d["rows"],
            "files": len(d.get("files") or []),
        }
        for d in outputs.get("deliver") or []
        if d
    }
    failed = sorted(label for label, t in tasks.items() if t.get("state") in FAILED_STATES)
    # Without validate's counts, the extracts' are the rows read: only when every one ran.
    extract_failed = any(label.startswith("extract") for label in failed)
    # A deliver that never ran (upstream failed) is not a failed delivery.
    delivery_failures = [
        label
        for label, t in tasks.items()
        if label.startswith("deliver") and t.get("state") == "failed"
    ]
    return {
        "ds": window.ds,
        "run_id": window.run_id,
        "state": "failed" if failed else "success",
        "failed_tasks": failed,
        "sources": sources,
        "rows_read": (
            sum(s.get("read", 0) for s in sources.values())
            if sources and (validated or not extract_failed)
            else None
        ),
        "rows_quarantined": (
            sum(s.get("quarantined", 0) for s in sources.values()) if validated else None
        ),
        "quarantine": quarantine,
        # the files with quarantined rows: how many, and the first few (most rows first)
        "quarantine_by_file": validated.get("quarantine_by_file"),
        "profiles": profiles.get("profiles", identity.get("profiles")),
        "profiles_created": identity.get("profiles_created"),
        "merges": identity.get("merges"),
        "profile_interactions": profiles.get("profile_interactions"),
        "deliveries": deliveries,
        "rows_delivered": sum(d["rows"] for d in deliveries.values()) if deliveries else None,
        "delivery_failures": len(delivery_failures),
        "tasks": tasks,
        # Working time: the wait for the landing is waiting (a deferred task keeps its start).
        "seconds": round(
            sum(t.get("seconds") or 0 for label, t in tasks.items() if label != LANDING_WAIT), 3
        ),
        "landing_waited_seconds": (tasks.get(LANDING_WAIT) or {}).get("seconds"),
        # identity.yml changed since this date: regrouped with no profile_merges row
        "rules_changed_since": identity.get("rules_changed_since"),
        # segments.yml rules naming what the catalogue or interactions lack (catalogue_misses)
        "segments_unmatched": (outputs.get("build_segments") or {}).get("unmatched"),
        # earlier landing dates no run loaded: their rows are in no profile (pipeline.unbuilt_dates)
        "unbuilt_dates": (outputs.get("validate") or {}).get("unbuilt_dates"),
        # partitions no daily run reads (pipeline.partitions_before_start), by source
        "before_start_date": {
            e["source"]: e["before_start_date"]
            for e in outputs.get("extract") or []
            if e and e.get("before_start_date")
        },
        # files of the same bytes in one partition, each read (landing.identical_files)
        "identical_files": {
            e["source"]: e["identical_files"]
            for e in outputs.get("extract") or []
            if e and e.get("identical_files")
        },
    }


def failure_text(report: dict[str, Any]) -> str:
    """``extract[interactions] failed (9 task(s) after it not run)``: the tasks that failed, apart
    from those that never ran because one before them failed (upstream_failed), which listed
    together hid the one to look at."""
    tasks = report.get("tasks") or {}
    failed = report["failed_tasks"]
    own = [t for t in failed if (tasks.get(t) or {}).get("state") != "upstream_failed"] or failed
    not_run = len(failed) - len(own)
    return f"{', '.join(own)} failed" + (
        f" ({not_run} task(s) after {'it' if len(own) == 1 else 'them'} not run)" if not_run else ""
    )


def summary_line(report: dict[str, Any]) -> str:
    def known(value: Any) -> Any:  # a count the run did not get to
        return "n/a" if value is None else value

    sources = ", ".join(f"{k} {v.get('read', 0)}" for k, v in report["sources"].items())
    aged_out = sum(v.get("aged_out", 0) for v in report["sources"].values())
    streamed = sum(v.get("kept_as_streamed", 0) for v in report["sources"].values())
    suppressed = sum(v.get("suppressed", 0) for v in report["sources"].values())
    deliveries = ", ".join(f"{k} {v['rows']}" for k, v in report["deliveries"].items())
    return (
        f"run {report['ds']} {report['state']}: "
        + (f"{failure_text(report)}; " if report["failed_tasks"] else "")
        + f"read {known(report['rows_read'])} row(s) ({sources}); "
        f"quarantined {known(report['rows_quarantined'])}; "
        + (f"of the valid, {suppressed} suppressed (not loaded); " if suppressed else "")
        + (f"aged out {aged_out} (past retention); " if aged_out else "")
        + (f"kept as the stream merged them {streamed}; " if streamed else "")
        + f"profiles {known(report['profiles'])} "
        f"({known(report['profiles_created'])} new, {known(report['merges'])} merged away); "
        f"delivered {known(report['rows_delivered'])} row(s) ({deliveries or 'none'})"
        + (
            f"; identity rules or their SQL changed since {report['rules_changed_since']}: "
            "profiles may be regrouped with no profile_merges row"
            if report.get("rules_changed_since")
            else ""
        )
        + (
            "; segment rules naming what the date's catalogue or interactions lack: "
            + unmatched_text(report["segments_unmatched"])
            if report.get("segments_unmatched")
            else ""
        )
        + (
            "; earlier landing dates not loaded, their rows in no profile: "
            + unbuilt_text(report["unbuilt_dates"])
            if report.get("unbuilt_dates")
            else ""
        )
        + (
            "; partitions before start_date, read by no daily run: "
            + before_start_text(report["before_start_date"])
            if report.get("before_start_date")
            else ""
        )
        + (
            "; files with the same bytes, each read (their rows counted as often): "
            + identical_text(report["identical_files"])
            if report.get("identical_files")
            else ""
        )
        + (
            f"; landed after their date was built: {late_text(report['late_landings'])}"
            if "late_landings" in report and report["late_landings"] != []
            else ""
        )
        + (
            f"; on the landing root, read by no run: {unread_text(report['unread_landing'])}"
            if report.get("unread_landing")
            else ""
        )
    )


def unmatched_text(unmatched: dict[str, list[str]]) -> str:
    """``blue (segments.blue.answer.equals: no element titled 'Team?' has the option 'Bleu')``."""
    return ", ".join(
        f"{segment} ({'; '.join(said)})" for segment, said in sorted(unmatched.items())
    )


def unbuilt_text(unbuilt: dict[str, Any]) -> str:
    """``2 (2022-04-25, 2022-04-26)``."""
    more = " ..." if unbuilt["dates"] > len(unbuilt["names"]) else ""
    return f"{unbuilt['dates']} ({', '.join(unbuilt['names'])}{more})"


def identical_text(identical: dict[str, list[list[str]]]) -> str:
    """``interactions part-0 (1).csv = part-0.csv``, per source and group."""
    return ", ".join(
        f"{source} {some_names(names, ' = ')}"
        for source, groups in sorted(identical.items())
        for names in groups
    )


def before_start_text(before: dict[str, dict]) -> str:
    """``interactions 2 (date=2022-04-20, date=2022-04-26)``, per source."""
    return ", ".join(
        f"{source} {b['partitions']} ({', '.join(b['names'])}"
        + (" ..." if b["partitions"] > len(b["names"]) else "")
        + ")"
        for source, b in sorted(before.items())
    )


def write_report(
    window: RunWindow,
    outputs: dict[str, Any],
    tasks: dict[str, dict],
    config: PipelineConfig | None = None,
) -> dict[str, Any]:
    """Store the run's report in ``pipeline_runs``, render its page; return a small summary."""
    config = config or load_config()
    report = build(window, outputs, tasks)
    report["late_landings"] = _late_landings(config, window.ds)  # lists landing, warehouse closed
    report["unread_landing"] = _unread_landing(config)
    with open_warehouse(config) as wh:
        wh.run_sql("report/tables")
        # quality_checks is keyed by (date, run id), and a cleared Airflow run keeps its id: the
        # rows are this attempt's only if check_quality ran in it (success or failed).
        checked = tasks.get("check_quality", {}).get("state", "success") in ("success", "failed")
        report["checks"] = (
            [
                {"name": name, "failures": failures}
                for name, failures in wh.query(
                    "SELECT check_name, failures FROM quality_checks "
                    f"WHERE dt = DATE '{window.ds}' AND run_id = {wh.literal(window.run_id)} "
                    "ORDER BY check_name"
                )
            ]
            if checked
            else []
        )
        wh.run_sql(
            "report/pipeline_runs",
            **{k: report[k] for k in _ROW_COLUMNS},
            report=json.dumps(report, sort_keys=True, default=str),
        )
        columns = ("ds", "profiles", "profiles_created", "merges", "quarantined", "delivered")

        def history(ds: str) -> list[dict[str, Any]]:
            return [
                dict(zip(columns, row[:6], strict=True))
                for row in wh.query_sql("report/history", ds=ds, dates=HISTORY_DATES)
            ]

        own_history = history(window.ds)
        latest, latest_report, latest_reported_at = wh.query_sql("report/latest")[0]
        # index.html is the latest date's page. When an older date reports after it (a backfill
        # run newest first), that page is drawn again from its stored report, this date in it.
        index = (
            None
            if latest == window.ds
            else (latest, latest_report, latest_reported_at, history(latest))
        )
    folder = report_dir(config)
    path = folder / f"{window.ds}.html"
    # The summary first: the page's disk is often the drop's, and when it is full or read-only
    # (the delivery failed on it too) the line the operator reads must still be in the log.
    log.info("%s; report %s", summary_line(report), path)
    summary = {k: report[k] for k in _ROW_COLUMNS if k != "run_id"}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        inside(folder, folder.parent)  # in a shared output folder: not through a planted link
        page = render_html(report, own_history).encode()
        replace_file(path, page)
        if (index_page := _drawn_again(*index) if index else page) is not None:
            replace_file(folder / "index.html", index_page)
    except OSError as exc:
        # The run is recorded (pipeline_runs) and summed up above; failing the task would retry
        # into the same disk and alert once more for what the delivery already failed on.
        log.warning("the report page was not written: %s", exc)
        return summary | {"html": None}
    return summary | {"html": str(path)}


def _drawn_again(
    ds: str, stored: str, reported_at: dt.datetime, history: list[dict[str, Any]]
) -> bytes | None:
    """The page of a date's stored report (index.html, after an older date reported); None,
    with a warning, when this code cannot draw it: the page is not this run's to fail on."""
    try:
        return render_html(json.loads(stored), history, reported_at).encode()
    except Exception as exc:
        log.warning(
            "index.html is left as it was: the stored report of %s could not be drawn: %s: %s",
            ds,
            type(exc).__name__,
            exc,
        )
        return None


def _unread_landing(config: PipelineConfig) -> dict[str, Any] | None:
    """What at the landing root's top no run reads (``landing.unread_root_entries``: a misspelt
    source folder, data files at the root), logged as a warning: how many and the first names;
    None when there is none or the root cannot be listed (the late-landing check says so)."""
    from audience_profiles import landing

    try:
        where, unread = landing.unread_root_entries(config.landing_root, config.landing_conn_id)
    except Exception as exc:  # the landing out of reach must not cost the run its report
        log.warning("could not list the landing root: %s: %s", type(exc).__name__, exc)
        return None
    if not unread:
        return None
    log.warning(
        "%s: %d entr%s no run reads, their rows in no count or output: %s (rename or move "
        "them; names starting with _ or . are ignored)",
        where,
        len(unread),
        "y" if len(unread) == 1 else "ies",
        landing.some_names(unread, "; "),
    )
    return {"entries": len(unread), "names": unread[:NAMES_SHOWN]}  # as some_names shows them


def unread_text(unread: dict[str, Any]) -> str:
    """``form-entries/ (not form_entries/); part-0.csv (...) and 3 more``."""
    more = unread["entries"] - len(unread["names"])
    return "; ".join(unread["names"]) + (f" and {more} more" if more else "")


def _late_landings(config: PipelineConfig, ds: str) -> list[dict[str, Any]] | None:
    """``pipeline.late_landings``, each logged as a warning; None when they could not be checked
    (the landing or the warehouse out of reach: the page and the summary line say so)."""
    from audience_profiles.pipeline import late_landings

    try:
        late = late_landings(config, ds)
    except Exception as exc:  # a landing bucket out of reach must not cost the run its report
        log.warning("could not check for late landing files: %s: %s", type(exc).__name__, exc)
        return None
    for entry in late:
        log.warning(
            "%s %s: %d file(s) landed or changed after the date was built, in no output until "
            "%s: %s",
            entry["source"],
            entry["date"],
            entry["files"],
            late_until(entry),
            ", ".join(entry["names"]) + (" ..." if entry["files"] > len(entry["names"]) else ""),
        )
    return late


def late_until(entry: dict[str, Any]) -> str:
    again = f"{entry['date']} is run again"
    return f"a stream batch merges them or {again}" if entry.get("stream") else again


def late_text(late: list[dict[str, Any]] | None) -> str:
    if late is None:
        return "not checked (see the log)"
    return ", ".join(f"{e['source']} {e['date']} ({e['files']} file(s))" for e in late)


_ROW_COLUMNS = (
    "ds",
    "run_id",
    "state",
    "rows_read",
    "rows_quarantined",
    "profiles",
    "profiles_created",
    "merges",
    "rows_delivered",
    "delivery_failures",
    "seconds",
)


def report_from_context(context: dict[str, Any]) -> dict[str, Any]:
    """Under Airflow: gather upstream XComs and task durations of this run, then report it."""
    from audience_profiles.pipeline import RunWindow

    ti = context["ti"]
    crumbs = [
        c for c in ti.get_task_breadcrumbs(ti.dag_id, ti.run_id) if c["task_id"] != ti.task_id
    ]
    indexes: dict[str, list[int]] = {}
    for crumb in crumbs:
        indexes.setdefault(crumb["task_id"], []).append(crumb["map_index"])
    # Only what succeeded in this try of the run: a task cleared with the run and then skipped
    # or upstream_failed never ran again, and its XCom is still the earlier try's (a run marked
    # failed reported the profiles and deliveries of the try before).
    succeeded = {(c["task_id"], c["map_index"]) for c in crumbs if str(c["state"]) == "success"}
    outputs: dict[str, Any] = {}
    for task_id in REPORTED_TASKS:
        found = sorted(indexes.get(task_id, []))
        if found and found != [-1]:  # mapped: one value per map index, None where it failed
            ran = [i for i in found if (task_id, i) in succeeded]
            pulled = ti.xcom_pull(task_ids=task_id, map_indexes=ran) if ran else []
            by_index = dict(zip(ran, pulled, strict=True))
            outputs[task_id] = [by_index.get(i) for i in found]
        elif (task_id, -1) in succeeded:
            outputs[task_id] = ti.xcom_pull(task_ids=task_id, map_indexes=-1)
        else:
            outputs[task_id] = None
    names = {
        "extract": dict(enumerate(EXTRACT_SOURCES)),  # a failed one has no output to name it
        "deliver": dict(enumerate(ti.xcom_pull(task_ids="destinations", map_indexes=-1) or [])),
    }
    order = {task_id: i for i, task_id in enumerate(TASK_ORDER)}
    tasks = {}
    for crumb in sorted(crumbs, key=lambda c: (order.get(c["task_id"], 99), c["map_index"])):
        label = crumb["task_id"]
        if crumb["map_index"] >= 0:
            name = names.get(label, {}).get(crumb["map_index"])
            label += f"[{name if name is not None else crumb['map_index']}]"
        tasks[label] = {"state": str(crumb["state"]), "seconds": crumb.get("duration")}
    return write_report(RunWindow.from_context(context), outputs, tasks)


# --- the HTML page -------------------------------------------------------------------------------


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def bar_chart(title: str, rows: list[tuple[str, float | None]], unit: str = "rows") -> str:
    """Horizontal bars, one per labelled value, as an inline SVG."""
    width, label_w, bar_h, top = 720, 260, 24, 30
    height = top + bar_h * max(len(rows), 1) + 8
    peak = max((v or 0 for _, v in rows), default=0) or 1
    out = [_svg_open(width, height, title), f'<text x="0" y="18" class="t">{_esc(title)}</text>']
    if not rows:
        out.append(f'<text x="{label_w}" y="{top + 16}" class="n">nothing to show</text>')
    for i, (label, value) in enumerate(rows):
        y = top + i * bar_h
        w = (width - label_w - 110) * (value or 0) / peak
        out.append(f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end">{_esc(label)}</text>')
        out.append(
            f'<rect x="{label_w}" y="{y + 4}" width="{w:.1f}" height="{bar_h - 8}" '
            f'fill="{COLORS[i % len(COLORS)]}"><title>{_esc(label)}: {_fmt(value)} {unit}</title>'
            "</rect>"
        )
        out.append(f'<text x="{label_w + w + 6:.1f}" y="{y + 16}">{_fmt(value)} {unit}</text>')
    return "".join(out) + "</svg>"


def time_chart(
    title: str, dates: list[str], series: dict[str, list[float | None]], columns: bool = False
) -> str:
    """Values per date as lines (or grouped columns), with a legend and a labelled y axis."""
    width, height, left, right, top, bottom = 720, 260, 60, 16, 40, 48
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max((v or 0 for values in series.values() for v in values), default=0)
    tick = _tick(peak / 4)
    y_max = tick * 4
    out = [_svg_open(width, height, title), f'<text x="0" y="18" class="t">{_esc(title)}</text>']
    for k in range(5):  # grid lines and y labels at 0, 25, 50, 75, 100 %
        y = top + plot_h - plot_h * k / 4
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="g"/>')
        out.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(tick * k)}</text>'
        )
    slot = plot_w / max(len(dates), 1)
    every = math.ceil(len(dates) / 12) or 1  # at most a dozen date labels
    for i, day in enumerate(dates):
        if i % every == 0:
            x = left + slot * (i + 0.5)
            out.append(
                f'<text x="{x:.1f}" y="{height - bottom + 18}" text-anchor="middle">{_esc(day)}</text>'
            )
    for s, (name, values) in enumerate(series.items()):
        color = COLORS[s % len(COLORS)]
        out.append(
            f'<rect x="{left + s * 170}" y="{height - 16}" width="12" height="12" fill="{color}"/>'
            f'<text x="{left + s * 170 + 18}" y="{height - 6}">{_esc(name)}</text>'
        )
        points = []
        for i, value in enumerate(values):
            if value is None:
                continue
            y = top + plot_h - plot_h * value / y_max
            tip = f"<title>{_esc(dates[i])} {_esc(name)}: {_fmt(value)}</title>"
            if columns:
                w = slot * 0.8 / len(series)
                x = left + slot * (i + 0.1) + w * s
                out.append(
                    f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{top + plot_h - y:.1f}" '
                    f'fill="{color}">{tip}</rect>'
                )
            else:
                x = left + slot * (i + 0.5)
                points.append(f"{x:.1f},{y:.1f}")
                out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}">{tip}</circle>')
        if points:
            out.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="{color}"/>')
    return "".join(out) + "</svg>"


def _tick(raw: float) -> int:
    """The smallest whole 1, 2 or 5 x 10^n at least ``raw``: round numbers on the y axis."""
    magnitude = 10 ** math.floor(math.log10(raw)) if raw >= 1 else 1
    return next(int(m * magnitude) for m in (1, 2, 5, 10) if m * magnitude >= raw)


def _svg_open(width: int, height: int, title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title)}">'
    )


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{"num" if isinstance(c, int | float) or c is None else ""}">'
            f"{_esc(_fmt(c))}</td>"
            for c in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:960px;color:#1a202c}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #e2e8f0}
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 12px;border-bottom:1px solid #edf2f7;
text-align:left}td.num{text-align:right}
.state{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:600}
.success{background:#2f855a}.failed{background:#c53030}
svg{display:block;margin:8px 0}svg text{font:12px system-ui,sans-serif;fill:#2d3748}
svg .t{font-weight:600;font-size:13px}svg .n{fill:#718096}svg .g{stroke:#edf2f7}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 16px}dt{color:#4a5568}dd{margin:0}
"""


def _quarantined_files(by_file: dict[str, Any] | None) -> list[str]:
    """The files with quarantined rows, as a table (none: nothing)."""
    if not by_file or not by_file["files"]:
        return []
    parts = [
        "<p>Files with quarantined rows, most first:</p>",
        _table(
            ["source", "file", "read", "quarantined"],
            [
                [source, file, read, quarantined]
                for source, file, read, quarantined in by_file["top"]
            ],
        ),
    ]
    more = by_file["files"] - len(by_file["top"])
    if more:
        parts.append(
            f"<p>and {more} more file(s) with quarantined rows: <code>landed_files</code> "
            "has every file's counts</p>"
        )
    return parts


def render_html(
    report: dict[str, Any],
    history: list[dict[str, Any]],
    reported_at: dt.datetime | None = None,
) -> str:
    """One self-contained page for the run, with the history it is given (``report/history``),
    reported now or at ``reported_at`` (UTC, as the warehouse's sessions keep it)."""
    dates = [h["ds"] for h in history]
    failed_checks = [c for c in report["checks"] if c["failures"]]
    summary = {
        "Rows read": report["rows_read"],
        "Rows quarantined": report["rows_quarantined"],
        "Profiles": report["profiles"],
        "Profiles created": report["profiles_created"],
        "Profiles merged away": report["merges"],
        "Rows delivered": report["rows_delivered"],
        "Task time (s)": report["seconds"],
        "Waited for the landing (s)": report.get("landing_waited_seconds"),
    }
    deliveries = [(name, d["rows"]) for name, d in report["deliveries"].items()]
    deliveries += [(label, 0) for label in report["failed_tasks"] if label.startswith("deliver[")]
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>audience_profiles run report {_esc(report['ds'])}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>audience_profiles · run report for {_esc(report['ds'])}</h1>",
        f'<p><span class="state {_esc(report["state"])}">{_esc(report["state"])}</span> '
        f"run <code>{_esc(report['run_id'])}</code>, reported "
        f"{(reported_at or dt.datetime.now(dt.UTC)).strftime('%Y-%m-%d %H:%M UTC')}</p>",
    ]
    if report["failed_tasks"]:
        parts.append(f"<p>Failed tasks: {_esc(', '.join(report['failed_tasks']))}</p>")
    late = report.get("late_landings", [])
    if late is None:
        parts.append(f"<p>Files landed after their date was built: {_esc(late_text(late))}</p>")
    for entry in late or []:
        more = entry["files"] - len(entry["names"])
        names = ", ".join(entry["names"]) + (f" and {more} more" if more else "")
        parts.append(
            f"<p><strong>Landed after {_esc(entry['date'])} was built</strong>: "
            f"{entry['files']} {_esc(entry['source'])} file(s), in no output until "
            f"{_esc(late_until(entry))}: {_esc(names)}</p>"
        )
    if report.get("unread_landing"):
        parts.append(
            "<p><strong>On the landing root, read by no run</strong> (rename or move them; "
            "names starting with _ or . are ignored): "
            f"{_esc(unread_text(report['unread_landing']))}</p>"
        )
    if report.get("rules_changed_since"):
        parts.append(
            "<p><strong>Identity rules or their SQL changed</strong> since the run for "
            f"{_esc(report['rules_changed_since'])}: this run's profiles follow the new ones, "
            "and profile_merges does not show what the change joined or split. Have consumers "
            "replace their copy from this full snapshot (docs/identity.md, Known limits).</p>"
        )
    if report.get("segments_unmatched"):
        parts.append(
            "<p><strong>Segment rules naming what the date's catalogue or interactions "
            "lack</strong> (a typo, or a poll not launched yet: such a rule matches only "
            "interactions of elements the catalogue lacks or had otherwise, none for an event "
            "id, and a destination syncing the segment keeps only the members it has in its "
            "address book): "
            f"{_esc(unmatched_text(report['segments_unmatched']))}</p>"
        )
    if report.get("unbuilt_dates"):
        parts.append(
            "<p><strong>Earlier landing dates not loaded</strong>, their rows in no profile of "
            f"this run (run them, then this date again): {_esc(unbuilt_text(report['unbuilt_dates']))}</p>"
        )
    if report.get("before_start_date"):
        parts.append(
            "<p><strong>Partitions dated before start_date</strong>, read by no daily run: "
            f"{_esc(before_start_text(report['before_start_date']))}</p>"
        )
    if report.get("identical_files"):
        parts.append(
            "<p><strong>Files with the same bytes</strong>, each read, so their rows are counted "
            "as often (if one is a copy, remove it and run the date again): "
            f"{_esc(identical_text(report['identical_files']))}</p>"
        )
    if failed_checks:
        names = "; ".join(f"{c['name']} ({c['failures']} row(s))" for c in failed_checks)
        parts.append(f"<p><strong>Failed quality checks:</strong> {_esc(names)}</p>")
    parts.append(
        "<dl>"
        + "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(_fmt(v))}</dd>" for k, v in summary.items())
        + "</dl>"
    )
    # read = valid + quarantined + the optional counts: rows past retention (a run of an old date
    # with retention on) and rows of files a stream batch merged after the extract listed them
    # (pipeline._streamed_files). The page shows each one a run has, so the sum can be checked.
    # Suppressed rows are part of valid: rows of people on the suppression list, not loaded.
    extra = [
        (key, label)
        for key, label in (
            ("aged_out", "aged out"),
            ("kept_as_streamed", "kept as streamed"),
            ("suppressed", "of valid: suppressed"),
        )
        if any(key in s for s in report["sources"].values())
    ]
    parts += [
        "<h2>Rows read per source</h2>",
        _table(
            ["source", "read", "valid", "quarantined"] + [label for _, label in extra],
            [
                [name, s.get("read"), s.get("valid"), s.get("quarantined")]
                + [s.get(key, 0) for key, _ in extra]
                for name, s in report["sources"].items()
            ],
        ),
        "<h2>Quarantine by reason</h2>",
        bar_chart(
            "Rows quarantined by source and field",
            [(f"{q['source']}: {q['reason']}", q["rows"]) for q in report["quarantine"]],
        ),
        *_quarantined_files(report.get("quarantine_by_file")),
        "<h2>Profiles and merges over time</h2>",
        time_chart("Profiles", dates, {"profiles": [h["profiles"] for h in history]}),
        time_chart(
            "Profiles created and merged per date",
            dates,
            {
                "created": [h["profiles_created"] for h in history],
                "merged away": [h["merges"] for h in history],
            },
            columns=True,
        ),
        time_chart(
            "Rows quarantined per date", dates, {"quarantined": [h["quarantined"] for h in history]}
        ),
        "<h2>Delivery per destination</h2>",
        bar_chart("Rows delivered by destination", deliveries),
        _table(
            ["destination", "kind", "table", "rows"],
            [
                [name, d["kind"], table, rows]
                for name, d in report["deliveries"].items()
                for table, rows in d["tables"].items()
            ],
        ),
        "<h2>Quality checks</h2>",
        _table(
            ["check", "result"],
            [
                [c["name"], "ok" if not c["failures"] else f"FAILED ({c['failures']} row(s))"]
                for c in report["checks"]
            ],
        ),
        "<h2>Task durations</h2>",
        bar_chart(
            "Seconds per task",
            [
                (label, t.get("seconds"))
                for label, t in report["tasks"].items()
                if label != LANDING_WAIT  # hours of waiting would dwarf the work
            ],
            unit="s",
        ),
        "</body></html>",
    ]
    return "\n".join(parts)
