"""Latency of the stream DAG through a real scheduler: from a file landing in S3 to its records
being read from Kinesis.

    python bench/bench_stream_latency.py [--steady-seconds 45] [--interval 2] [--burst 30]

Starts moto (S3 + SQS + Kinesis) and a running Airflow on PostgreSQL (api-server, scheduler,
triggerer, dag-processor; LocalExecutor; ``tests/services/airflow_stack.py``) with only
``audience_profiles_stream``, driven by its SQS asset watcher. After a warm-up batch (element
catalogue + form entries that make 50 known sessions), a writer lands one interaction file every
``--interval`` seconds, then a burst of ``--burst`` files at once, while a consumer reads the
Kinesis stream. Prints p50/p95/max latency
per phase, throughput, whether any burst file was lost, and where the time goes (from the REST
API's asset-event, run and task-instance timestamps and the task's own step timings). Everything
it starts is stopped at the end; the whole run is bounded by ``--deadline`` seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "include"), str(REPO)]

import boto3  # noqa: E402
import duckdb  # noqa: E402
import yaml  # noqa: E402

from tests.services._proc import background, free_port  # noqa: E402
from tests.services.airflow_stack import start_airflow_stack  # noqa: E402
from tests.services.moto import aws_connection_json  # noqa: E402
from tests.support import FORM_HEADER, INTERACTION_HEADER  # noqa: E402

DAG_ID = "audience_profiles_stream"
TASK_ID = "process_landed_files"
CONN_ID = "aws_bench"
SESSIONS = [f"s-{i:03d}" for i in range(50)]
POLL = "bench-poll"
ROWS_PER_FILE = 5
COMPILED = ("include", "dags", "plugins")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def csv_bytes(header: list[str], rows: list[list]) -> bytes:
    out = io.StringIO()
    out.write(",".join(header) + "\n")
    out.writelines(",".join(str(v) for v in row) + "\n" for row in rows)
    return out.getvalue().encode()


class Consumer(threading.Thread):
    """Reads every shard of the stream from the start; notes when each record arrived."""

    def __init__(self, moto_url: str, stream: str):
        super().__init__(daemon=True)
        self.client = boto3.client("kinesis", endpoint_url=moto_url, region_name="us-east-1")
        self.stream = stream
        self.arrivals: list[tuple[float, dict]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        iterators = {
            s["ShardId"]: self.client.get_shard_iterator(
                StreamName=self.stream, ShardId=s["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            for s in self.client.list_shards(StreamName=self.stream)["Shards"]
        }
        while not self.stop.is_set():
            for shard, iterator in iterators.items():
                page = self.client.get_records(ShardIterator=iterator, Limit=10_000)
                now = time.time()
                self.arrivals += [(now, json.loads(r["Data"])) for r in page["Records"]]
                iterators[shard] = page["NextShardIterator"]
            time.sleep(0.05)

    def files_read(self) -> dict[str, float]:
        """event_id -> when the last of its file's interaction records was read."""
        seen: dict[str, dict[str, float]] = {}
        for when, record in list(self.arrivals):
            if record["event_type"] == "interaction":
                ids = seen.setdefault(record["payload"]["event_id"], {})
                ids.setdefault(record["record_id"], when)
        return {e: max(ids.values()) for e, ids in seen.items() if len(ids) >= ROWS_PER_FILE}


class Writer:
    def __init__(self, moto_url: str, bucket: str):
        self.s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
        self.bucket = bucket
        self.day = dt.datetime.now(dt.UTC).date().isoformat()
        self.landed: dict[str, float] = {}  # event_id -> when its file was in S3
        self.keys: dict[str, str] = {}
        self.rng = random.Random(7)

    def put(self, key: str, body: bytes) -> float:
        self.s3.put_object(Bucket=self.bucket, Key=f"landing/{key}", Body=body)
        return time.time()

    def warm_up(self) -> None:
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(timespec="seconds")
        self.put(
            "elements/elements.csv",
            csv_bytes(
                ["poll_id", "title", "option", "option_label"],
                [[POLL, "Who scores next?", i, f"Player {i}"] for i in range(4)],
            ),
        )
        rows = [
            [now, "Fan", str(i), f"fan{i}@bench.example", "Yes", "No", "Yes", s, "Bench", 1]
            for i, s in enumerate(SESSIONS)
        ]
        self.put(f"form_entries/date={self.day}/warm-up.csv", csv_bytes(FORM_HEADER, rows))

    def land(self, n: int) -> None:
        event_id = f"bench-{n:04d}"
        rows = [
            [self.day, event_id, POLL, session, self.rng.randrange(4), 1]
            for session in self.rng.sample(SESSIONS, ROWS_PER_FILE)
        ]
        key = f"interactions/date={self.day}/{event_id}.csv"
        self.landed[event_id] = self.put(key, csv_bytes(INTERACTION_HEADER, rows))
        self.keys[f"landing/{key}"] = event_id


def busy(airflow, states: str = "state=queued&state=running") -> bool:
    return airflow.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?{states}")["total_entries"] > 0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summary(values: list[float]) -> str:
    if not values:
        return "n/a"
    return (
        f"p50 {statistics.median(values):5.2f}s  p95 {percentile(values, 0.95):5.2f}s  "
        f"max {max(values):5.2f}s  (n={len(values)})"
    )


def epoch(value: str | None) -> float | None:
    return dt.datetime.fromisoformat(value).timestamp() if value else None


def pages(airflow, path: str, key: str) -> list[dict]:
    """Every item of a paged REST API list (the API caps a page at 100)."""
    items: list[dict] = []
    while True:
        sep = "&" if "?" in path else "?"
        page = airflow.api("GET", f"{path}{sep}limit=100&offset={len(items)}")
        items += page[key]
        if not page[key] or len(items) >= page["total_entries"]:
            return items


def ledger(warehouse: Path, timeout: float) -> dict[str, str]:
    """S3 key -> the run that emitted it, from the stream's ledger (``stream_files``).

    DuckDB has one writer: the file is read once no run holds it (the DAG is paused by then).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with duckdb.connect(str(warehouse), read_only=True) as db:
                rows = db.execute("SELECT file, run_id FROM stream_files").fetchall()
            return {file.split("/", 3)[3]: run_id for file, run_id in rows}
        except duckdb.IOException:
            if time.monotonic() > deadline:
                return {}
            time.sleep(0.5)


def delivered_by(files: list[str], writer: Writer, emitted_by: dict[str, str]) -> str:
    """How many of ``files`` event-driven and reconciliation runs emitted."""
    kinds = {"asset_triggered": 0, "scheduled": 0, "not in the ledger": 0}
    keys = {event_id: key for key, event_id in writer.keys.items()}
    for event_id in files:
        run_id = emitted_by.get(keys[event_id], "not in the ledger")
        kinds[run_id.split("__")[0]] = kinds.get(run_id.split("__")[0], 0) + 1
    return (
        f"{kinds.pop('asset_triggered')} by event-driven runs, {kinds.pop('scheduled')} by "
        f"reconciliation runs, {kinds.pop('not in the ledger')} not in the ledger"
        + "".join(f", {n} by {kind} runs" for kind, n in kinds.items() if n)
    )


def where_time_goes(
    airflow, writer: Writer, read: dict[str, float], files: list[str], emitted_by: dict[str, str]
) -> None:
    """Per file: land -> asset event -> its run created -> task queued -> running -> read.

    A file is followed to the run that emitted it (the ledger), which is not always the run its
    event triggered: a run reads every landing event stored since its earliest triggering one.
    Marks are clamped to be increasing: an event stored after its run was created (the run was
    already underway and took it) waited 0 s for the run, the task's queue and its start.
    """
    phases: dict[str, list[float]] = {
        k: []
        for k in (
            "S3 -> SQS -> triggerer (asset event stored)",
            "scheduler: asset event -> run created",
            "scheduler: run created -> task queued",
            "executor: task queued -> task running",
            "task running -> records read",
            "  of which pipeline steps (select .. emit)",
        )
    }
    names = list(phases)
    stored: dict[str, float] = {}  # S3 key -> when its asset event was stored
    for event in pages(airflow, "/api/v2/assets/events", "asset_events"):
        for message in ((event.get("extra") or {}).get("payload") or {}).get("message_batch") or []:
            for record in json.loads(message["Body"]).get("Records") or []:
                key = urllib.parse.unquote_plus(record["s3"]["object"]["key"])
                stored.setdefault(key, epoch(event["timestamp"]))
    runs = {
        r["dag_run_id"]: r for r in pages(airflow, f"/api/v2/dags/{DAG_ID}/dagRuns", "dag_runs")
    }
    by_type: dict[str, int] = {}
    per_run = []
    step_seconds: dict[str, list[float]] = {}
    tis: dict[str, dict] = {}
    steps_of: dict[str, float] = {}
    for run_id, run in runs.items():
        by_type[run["run_type"]] = by_type.get(run["run_type"], 0) + 1
        base = f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id, safe='')}"
        tis[run_id] = ti = airflow.api("GET", f"{base}/taskInstances/{TASK_ID}")
        try:
            xcom = airflow.api(
                "GET", f"{base}/taskInstances/{TASK_ID}/xcomEntries/return_value?deserialize=true"
            )["value"]
            xcom = json.loads(xcom) if isinstance(xcom, str) else xcom
        except Exception:  # a failed or running task has no return value
            xcom = {}
        seconds = xcom.get("seconds") or {}
        steps_of[run_id] = sum(v for k, v in seconds.items() if k != "commit")
        if run["run_type"] == "asset_triggered" and xcom.get("files"):
            for step, value in seconds.items():
                step_seconds.setdefault(step, []).append(value)
        per_run.append((run["run_type"], xcom.get("files", 0), ti.get("duration")))
    keys = {event_id: key for key, event_id in writer.keys.items()}
    for event_id in files:
        run_id = emitted_by.get(keys[event_id])
        if event_id not in read or run_id not in runs or keys[event_id] not in stored:
            continue
        run, ti = runs[run_id], tis[run_id]
        marks = [
            writer.landed[event_id],
            stored[keys[event_id]],
            epoch(run["queued_at"]),
            epoch(ti["queued_when"]),
            epoch(ti["start_date"]),
            read[event_id],
        ]
        if None in marks:
            continue
        for i in range(2, len(marks) - 1):
            marks[i] = max(marks[i], marks[i - 1])
        for name, a, b in zip(names, marks, marks[1:], strict=False):
            phases[name].append(b - a)
        phases[names[-1]].append(steps_of[run_id])
    # The run cycle: one event-driven task's end to the next one's start (scheduler + executor).
    ends = sorted(
        (epoch(tis[r]["start_date"]), epoch(tis[r]["end_date"]))
        for r, run in runs.items()
        if tis[r].get("start_date") and tis[r].get("end_date")
    )
    gaps = [b[0] - a[1] for a, b in zip(ends, ends[1:], strict=False) if b[0] - a[1] < 5]
    log(f"runs: {by_type}")
    for run_type in sorted(by_type):
        batch = [(f, d) for t, f, d in per_run if t == run_type and d is not None]
        if batch:
            log(
                f"  {run_type}: median {statistics.median(f for f, _ in batch)} file(s) per run, "
                f"task duration median {statistics.median(d for _, d in batch):.2f}s"
            )
    log(f"  a task's end -> the next task running (runs back to back) {summary(gaps)}")
    log("inside the task, per event-driven run with files (median / p95 per step):")
    for step in ("select", "stage", "validate", "resolve", "emit", "commit"):
        log(f"  {step:44s} {summary(step_seconds.get(step, []))}")
    log("where the time goes, steady files (median / p95 per phase):")
    for name, values in phases.items():
        log(f"  {name:44s} {summary(values)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steady-seconds", type=float, default=45)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between files")
    parser.add_argument("--burst", type=int, default=30, help="files landed at once")
    parser.add_argument("--deadline", type=float, default=240, help="hard stop, seconds")
    parser.add_argument(
        "--reconcile-seconds",
        type=int,
        default=60,
        help="the DAG's reconciliation interval (production: 300); the report says which files "
        "event-driven runs emitted and which the reconciliation found",
    )
    args = parser.parse_args()
    started = time.monotonic()
    deadline = started + args.deadline

    def remaining() -> float:
        return deadline - time.monotonic()

    root = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    log(f"working under {root}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    moto_port = free_port()
    moto_exe = str(Path(sys.executable).with_name("moto_server"))
    with background(
        [moto_exe, "-H", "127.0.0.1", "-p", str(moto_port)], moto_port, root / "logs" / "moto.log"
    ):
        moto_url = f"http://127.0.0.1:{moto_port}"
        os.environ.update(
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
        )
        s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
        sqs = boto3.client("sqs", endpoint_url=moto_url, region_name="us-east-1")
        kinesis = boto3.client("kinesis", endpoint_url=moto_url, region_name="us-east-1")
        bucket, stream = "bench-landing", "bench-profiles"
        s3.create_bucket(Bucket=bucket)
        queue_url = sqs.create_queue(QueueName="bench-landed")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
        s3.put_bucket_notification_configuration(
            Bucket=bucket,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {
                        "QueueArn": queue_arn["Attributes"]["QueueArn"],
                        "Events": ["s3:ObjectCreated:*"],
                    }
                ]
            },
        )
        kinesis.create_stream(StreamName=stream, ShardCount=2)
        kinesis.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.2})

        config = root / "pipeline.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "start_date": "2024-01-01",
                    "landing_root": f"s3://{bucket}/landing",
                    "landing_conn_id": CONN_ID,
                    "work_dir": str(root / "work"),
                    "warehouse": {"engine": "duckdb", "path": str(root / "warehouse.duckdb")},
                    "identity_config": str(REPO / "include" / "config" / "identity.yml"),
                    "destinations": [
                        {
                            "name": "profile_stream",
                            "kind": "kinesis",
                            "conn_id": CONN_ID,
                            "stream_name": stream,
                            "tables": [
                                "profile_merges",
                                "audience_profiles",
                                "audience_profile_interactions",
                            ],
                        }
                    ],
                }
            )
        )
        dags = root / "dags"
        dags.mkdir()
        (dags / f"{DAG_ID}.py").symlink_to(REPO / "dags" / f"{DAG_ID}.py")
        env = {
            "AUDIENCE_PROFILES_STREAM_SQS_QUEUE_URL": queue_url,
            "AUDIENCE_PROFILES_STREAM_AWS_CONN_ID": CONN_ID,
            "AUDIENCE_PROFILES_STREAM_RECONCILE_SECONDS": str(args.reconcile_seconds),
            f"AIRFLOW_CONN_{CONN_ID.upper()}": aws_connection_json(moto_url),
        }
        settings = {
            # The shared stack creates no run by itself; this DAG's runs come from its asset
            # watcher and its reconciliation timetable, both the scheduler's job.
            "scheduler": {"use_job_schedule": "True"},
            # The DAG file does not change during the run: do not re-parse it.
            "dag_processor": {"min_file_process_interval": "600"},
        }
        # As a production image would ship it: the project's code compiled (this environment
        # sets PYTHONDONTWRITEBYTECODE, so nothing else writes the .pyc files).
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", *(str(REPO / d) for d in COMPILED)],
            check=True,
        )
        log("starting PostgreSQL and Airflow (api-server, scheduler, triggerer, dag-processor)")
        # tests/services/airflow_stack.py: its warehouse pool, the repository's plugins/ (the
        # scheduler preloads the task's imports before forking its LocalExecutor workers) and
        # the worktree's code on PYTHONPATH.
        with start_airflow_stack(
            root,
            config_path=config,
            settings=settings,
            extra_env=env,
            dags_folder=dags,
        ) as airflow:
            log(f"Airflow up after {time.monotonic() - started:.0f}s")
            dag = airflow.wait_for_dag(DAG_ID, 90)
            airflow.api("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})
            # Watchers are registered when an unpaused DAG is parsed: parse it again now.
            airflow.api("PUT", f"/api/v2/parseDagFile/{dag['file_token']}")
            consumer = Consumer(moto_url, stream)
            consumer.start()
            writer = Writer(moto_url, bucket)

            log("warm-up: element catalogue and 50 known sessions")
            writer.warm_up()
            writer.land(0)
            # Warm until the first file is out and no run is left: the first task of a fresh
            # worker and the first reconciliation are not what is measured.
            while remaining() > 110 and (
                "bench-0000" not in consumer.files_read() or busy(airflow)
            ):
                time.sleep(0.5)
            if "bench-0000" not in consumer.files_read() or busy(airflow):
                log("WARNING: still warming up; the steady phase starts on a cold stream")
            log(f"warm-up done after {time.monotonic() - started:.0f}s")

            steady = []
            tick = time.monotonic()
            # What is left after the start-up is shared: 75 s stay for settling, burst, report.
            steady_seconds = min(args.steady_seconds, remaining() - 75)
            n = 1
            while time.monotonic() - tick < steady_seconds:
                writer.land(n)
                steady.append(f"bench-{n:04d}")
                n += 1
                time.sleep(max(0.0, tick + (n - 1) * args.interval - time.monotonic()))
            settle = time.monotonic() + min(15, remaining() - 60)
            while not set(steady) <= set(consumer.files_read()) and time.monotonic() < settle:
                time.sleep(0.2)

            log(f"burst: {args.burst} files at once")
            burst = []
            for _ in range(args.burst):
                writer.land(n)
                burst.append(f"bench-{n:04d}")
                n += 1
            while not set(burst) <= set(consumer.files_read()) and remaining() > 25:
                time.sleep(0.2)
            consumer.stop.set()
            read = consumer.files_read()
            # No new run from here on; the ledger is read once the last one let go of DuckDB.
            airflow.api("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": True})
            while busy(airflow, "state=running") and remaining() > 15:
                time.sleep(0.5)
            emitted_by = ledger(root / "warehouse.duckdb", timeout=max(1.0, remaining() - 12))

            steady_latency = [read[e] - writer.landed[e] for e in steady if e in read]
            burst_latency = [read[e] - writer.landed[e] for e in burst if e in read]
            lost = [e for e in steady + burst if e not in read]
            ids = [r["record_id"] for _, r in consumer.arrivals]
            log("")
            log(
                f"steady ({len(steady)} files, one every {args.interval}s, {ROWS_PER_FILE} rows each)"
            )
            log(f"  landing -> records read: {summary(steady_latency)}")
            log(f"  emitted: {delivered_by(steady, writer, emitted_by)}")
            if burst_latency:
                span = max(read[e] for e in burst if e in read) - min(
                    writer.landed[e] for e in burst
                )
                log(f"burst ({len(burst)} files at once)")
                log(f"  landing -> records read: {summary(burst_latency)}")
                log(
                    f"  all read {span:.1f}s after the first landed: "
                    f"{len(burst_latency) / span:.1f} files/s, "
                    f"{len(burst_latency) * ROWS_PER_FILE / span:.0f} interaction records/s"
                )
            log(f"  emitted: {delivered_by(burst, writer, emitted_by)}")
            log(f"files not read by the end: {len(lost)} {lost[:10]}")
            log(
                f"records read: {len(ids)} ({len(ids) - len(set(ids))} duplicate record_ids, "
                "expected at-least-once after a retry only)"
            )
            where_time_goes(airflow, writer, read, steady, emitted_by)
            log(
                f"finished in {time.monotonic() - started:.0f}s (load average now "
                f"{os.getloadavg()[0]:.1f}); stopping everything"
            )
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
