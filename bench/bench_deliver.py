"""Benchmark of the ``deliver`` step at scale: figures per destination kind, printed (never asserted).

    # after bench_build.py --sizes 1000000 10000000: the exports of its last daily build
    python bench/bench_deliver.py --size 1000000
    python bench/bench_deliver.py --size 10000000 --kinds local s3 snowflake kafka
    python bench/bench_deliver.py --exports <work>/runs/<ds>/export --max-rows 200000

``--exports`` is a run's export folder as ``publish`` leaves it (``<work>/runs/<ds>/export/``
with one ``<table>.parquet`` per output table; bench/bench_build.py makes them). Each kind is
delivered through the DAG's own path, :func:`audience_profiles.pipeline.deliver` (what the
``deliver`` task's ``DeliverOperator`` calls for one destination), with a pipeline.yml holding
that one destination, against a local stand-in this script starts and stops (the test services
of tests/services/):

| kind | stand-in | tables (the shipped docs' example for the kind) |
|---|---|---|
| local | a scratch folder | the shipped include/config/pipeline.yml: audience_profiles, audience_profile_interactions, profile_identifiers, profile_merges, interactions_enriched, quarantine; csv + json |
| s3 | moto server | docs/destinations.md: audience_profiles, segment_memberships; csv + parquet, gzip, max_file_mb 256, QuickSight manifest, pii hashed |
| azure | Azurite (node_modules/.bin/azurite-blob; skipped when missing) | docs/destinations.md: audience_profiles; csv |
| snowflake | fakesnow server | docs/snowflake.md section 1: audience_profiles, audience_profile_interactions, profile_identifiers, profile_merges, interactions_enriched, quarantine |
| sql | PostgreSQL (tests/services/postgres.py; skipped without its binaries) | docs/snowflake.md section 3: audience_profiles, audience_profile_interactions, profile_identifiers, profile_merges |
| kinesis | moto server (4 shards; see serve_moto) | docs/streams.md: profile_merges, audience_profiles, audience_profile_interactions; pii hashed |
| firehose | moto server (into an S3 bucket) | docs/streams.md: audience_profiles |
| kafka | librdkafka mock cluster (3 brokers) | docs/streams.md: profile_merges, audience_profiles, audience_profile_interactions |
| dotdigital | tests/services/dotdigital_standin.py | docs/activation.md: segment_memberships, audience_profiles; segments manchester_blue_fans and partner_marketing, consent texts, data fields TEAM and LASTINTERACTION |

``segment_memberships`` is not among bench_build.py's exports (its build has no segments), so it
is made here from ``audience_profiles`` by the two segments.yml rules that need nothing else:
``manchester_blue_fans`` (latest answer to "Which team do you support?" is Manchester Blue) and
``partner_marketing`` (optin_2 is true). Dotdigital polls imports every second here
(``poll_interval: 1``; the default 10 s only adds sleeping).

Every delivery runs in a child process (a fresh interpreter), so its peak RSS (ru_maxrss) is its
own; the stand-ins run in processes of their own too, and their CPU competes with the delivery's
on a small machine. Per kind it prints rows delivered (the sum of the DeliveryReport's ``rows``;
for Dotdigital its contacts added, changed, removed and rejected, with the consent records sent
per segment on a line of their own), seconds, rows/s and peak RSS, with the load average before
and after. ``--max-rows N`` delivers the first N rows of each table instead of all (the output
says so): for a stand-in that is itself the bottleneck. ``--timeout`` stops a delivery that has
not finished and says so.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))
sys.path.insert(0, str(ROOT))

DS = "2022-05-01"
BENCH_WORK = "/tmp/audience-profiles-bench"  # bench_build.py's --work default
RUN_ID = "bench_deliver"
KINDS = ("local", "s3", "azure", "snowflake", "sql", "kinesis", "firehose", "kafka", "dotdigital")
SEGMENTS = "segment_memberships"
TEAM = "Which team do you support?"
AZURITE_BLOB = ROOT / "node_modules" / ".bin" / "azurite-blob"

# The tables the shipped pipeline.yml drops locally (docs/snowflake.md loads the same six).
WAREHOUSE_TABLES = next(
    entry["tables"]
    for entry in yaml.safe_load((ROOT / "include" / "config" / "pipeline.yml").read_text())[
        "destinations"
    ]
    if entry["kind"] == "local"
)
# One pipeline.yml entry per kind: the shipped docs' example for it (see the module docstring).
ENTRIES: dict[str, dict] = {
    "local": {
        "kind": "local",
        "formats": ["csv", "json"],
        "pii": "plain",
        "tables": WAREHOUSE_TABLES,
    },
    "s3": {
        "kind": "s3",
        "conn_id": "aws_bench",
        "bucket": "bench-audience",
        "prefix": "exports/audience",
        "formats": ["csv", "parquet"],
        "compression": "gzip",
        "max_file_mb": 256,
        "quicksight_manifest": True,
        "pii": "hashed",
        "tables": ["audience_profiles", SEGMENTS],
    },
    "azure": {
        "kind": "azure",
        "conn_id": "azure_bench",
        "container": "audience",
        "prefix": "exports/audience",
        "formats": ["csv"],
        "tables": ["audience_profiles"],
    },
    "snowflake": {
        "kind": "snowflake",
        "conn_id": "snowflake_bench",
        "database": "ANALYTICS",
        "schema": "AUDIENCE",
        "pii": "plain",
        "tables": WAREHOUSE_TABLES,
    },
    "sql": {
        "kind": "sql",
        "conn_id": "pg_bench",
        "schema": "audience",
        "column_types": {"string": "TEXT"},
        "batch_rows": 10000,
        "tables": [
            "audience_profiles",
            "audience_profile_interactions",
            "profile_identifiers",
            "profile_merges",
        ],
    },
    "kinesis": {
        "kind": "kinesis",
        "conn_id": "aws_bench",
        "stream_name": "audience-profiles",
        "max_attempts": 8,
        "pii": "hashed",
        "tables": ["profile_merges", "audience_profiles", "audience_profile_interactions"],
    },
    "firehose": {
        "kind": "firehose",
        "conn_id": "aws_bench",
        "delivery_stream": "audience-profiles",
        "tables": ["audience_profiles"],
    },
    "kafka": {
        "kind": "kafka",
        "conn_id": "kafka_bench",
        "topic": "audience-profiles",
        "tables": ["profile_merges", "audience_profiles", "audience_profile_interactions"],
    },
    "dotdigital": {
        "kind": "dotdigital",
        "conn_id": "dotdigital_bench",
        "tables": [SEGMENTS, "audience_profiles"],
        "segments": {
            "manchester_blue_fans": {"address_book": "AP - Manchester Blue fans"},
            "partner_marketing": {"address_book": "AP - partner marketing", "partner": True},
        },
        "consent": {
            "column": "optin_1",
            "partner_column": "optin_2",
            "text": "Yes, send me news and offers from the club.",
            "partner_text": "Yes, send me offers from the club's partners.",
            "url": "https://club.example/newsletter",
        },
        "data_fields": {"TEAM": f"answers.{TEAM}", "LASTINTERACTION": "last_seen"},
        "poll_interval": 1,
    },
}


# --- the child: one delivery ------------------------------------------------------------------


def child_deliver(a: dict) -> dict:
    """Deliver the run's exports to the one destination of ``a["config"]``, timed."""
    from audience_profiles.config import load_config
    from audience_profiles.pipeline import RunWindow, deliver

    config = load_config(a["config"])
    window = RunWindow.for_date(DS, RUN_ID)
    start = time.perf_counter()
    report = deliver(a["name"], window, a["tables"], config)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rows": report["rows"], "details": report["details"]}


def run_child(payload: dict, env: dict[str, str], timeout: float) -> dict:
    """One delivery in a fresh interpreter: its result, or its error, with its own peak RSS."""
    out = Path(payload["scratch"]) / "child.json"
    log = Path(payload["scratch"]) / "child.log"
    start = time.perf_counter()
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", json.dumps(payload), str(out)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,
        )
        try:
            _, status, usage = _wait4(proc, timeout)
        except BaseException as stopped:
            # Its own session keeps a Ctrl-C from reaching it: stop it (and what it started)
            # here, whether it ran out of time or the benchmark itself is being stopped.
            os.killpg(proc.pid, signal.SIGKILL)
            _, status, usage = os.wait4(proc.pid, 0)
            if not isinstance(stopped, TimeoutError):
                raise
            return {
                "error": f"did not finish in {timeout:.0f} s (stopped)",
                "wall_seconds": time.perf_counter() - start,
                "peak_rss_kib": usage.ru_maxrss,
                "log": str(log),
            }
    result = json.loads(out.read_text()) if out.exists() else {}
    if status or "seconds" not in result:
        tail = log.read_text(errors="replace")[-3000:]
        result["error"] = result.get("error") or f"exit status {status}"
        result["log_tail"] = tail
    result["wall_seconds"] = time.perf_counter() - start
    result["peak_rss_kib"] = usage.ru_maxrss  # the child's own (and its children's), in KiB
    result["log"] = str(log)
    return result


def _wait4(proc: subprocess.Popen, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return pid, proc.returncode, usage
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.2)


# --- inputs -----------------------------------------------------------------------------------


def prepare_tables(exports: Path, scratch: Path, max_rows: int | None) -> dict[str, str]:
    """The run's tables as the DAG hands them on (every export), plus segment_memberships;
    the first ``max_rows`` rows of each with ``--max-rows``."""
    import duckdb

    tables = {p.stem: str(p) for p in sorted(exports.glob("*.parquet"))}
    if "audience_profiles" not in tables:
        raise SystemExit(f"{exports}: no audience_profiles.parquet (not a run's export folder)")
    con = duckdb.connect()
    if max_rows:
        capped = scratch / f"first-{max_rows}"
        capped.mkdir(parents=True, exist_ok=True)
        for table, path in list(tables.items()):
            target = capped / f"{table}.parquet"
            con.execute(
                f"COPY (SELECT * FROM read_parquet('{path}') LIMIT {int(max_rows)}) "
                f"TO '{target}' (FORMAT parquet, COMPRESSION zstd)"
            )
            tables[table] = str(target)
    if SEGMENTS not in tables:
        target = scratch / f"{SEGMENTS}.parquet"
        profiles = f"read_parquet('{tables['audience_profiles']}')"
        con.execute(
            f"""COPY (
              SELECT * FROM (
                SELECT 'manchester_blue_fans' AS segment_id, profile_id,
                       CAST(last_seen AS DATE) AS since
                FROM {profiles}
                WHERE json_extract_string(answers, '$."{TEAM}"') = 'Manchester Blue'
                UNION ALL
                SELECT 'partner_marketing', profile_id, CAST(optin_2_at AS DATE)
                FROM {profiles} WHERE optin_2
              ) ORDER BY segment_id, profile_id
            ) TO '{target}' (FORMAT parquet)"""
        )
        tables[SEGMENTS] = str(target)
    con.close()
    return tables


def row_counts(tables: dict[str, str]) -> dict[str, int]:
    import pyarrow.parquet as pq

    return {t: pq.read_metadata(p).num_rows for t, p in tables.items()}


def write_config(kind: str, scratch: Path, extra: dict) -> Path:
    import yaml

    entry = {"name": f"bench_{kind}", **ENTRIES[kind], **extra}
    path = scratch / "pipeline.yml"
    path.write_text(
        yaml.safe_dump(
            {
                "start_date": "2022-01-11",
                "landing_root": str(scratch / "landing"),
                "work_dir": str(scratch / "work"),
                "warehouse": {"path": str(scratch / "warehouse.duckdb")},
                "identity_config": str(ROOT / "include" / "config" / "identity.yml"),
                "segments_config": str(ROOT / "include" / "config" / "segments.yml"),
                "destinations": [entry],
            },
            sort_keys=False,
        )
    )
    return path


# --- stand-ins --------------------------------------------------------------------------------


def _stand_in(cmd: list[str], port: int, logs: Path, name: str, env=None, ready=None):
    from tests.services._proc import background

    pythonpath = os.pathsep.join(
        p for p in (str(ROOT), str(ROOT / "include"), os.environ.get("PYTHONPATH")) if p
    )
    return background(
        cmd, port, logs / f"{name}.log", env={"PYTHONPATH": pythonpath, **(env or {})}, ready=ready
    )


def moto(stack: contextlib.ExitStack, logs: Path) -> tuple[str, dict[str, str]]:
    from tests.services._proc import free_port
    from tests.services.moto import aws_connection_json

    port = free_port()
    cmd = [sys.executable, __file__, "--serve-moto", str(port)]
    stack.enter_context(_stand_in(cmd, port, logs, "moto"))
    url = f"http://127.0.0.1:{port}"
    return url, {
        "AIRFLOW_CONN_AWS_BENCH": aws_connection_json(url),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def aws_targets(url: str, kind: str) -> None:
    """What the destination expects to exist: the bucket, the stream, the delivery stream."""
    import boto3

    def client(service: str):
        return boto3.client(
            service,
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    if kind == "s3":
        client("s3").create_bucket(Bucket=ENTRIES["s3"]["bucket"])
    elif kind == "kinesis":
        kinesis = client("kinesis")
        name = ENTRIES["kinesis"]["stream_name"]
        kinesis.create_stream(StreamName=name, ShardCount=4)
        kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.2})
    elif kind == "firehose":
        client("s3").create_bucket(Bucket="bench-firehose")
        client("firehose").create_delivery_stream(
            DeliveryStreamName=ENTRIES["firehose"]["delivery_stream"],
            DeliveryStreamType="DirectPut",
            ExtendedS3DestinationConfiguration={
                "RoleARN": "arn:aws:iam::123456789012:role/firehose",
                "BucketARN": "arn:aws:s3:::bench-firehose",
                "Prefix": "profiles/",
            },
        )


def azurite(stack: contextlib.ExitStack, logs: Path, scratch: Path) -> dict[str, str] | None:
    from tests.services._proc import free_port
    from tests.services.azurite import azurite_connection_string

    if not AZURITE_BLOB.exists():  # npm ci in the project root installs it
        return None
    exe = AZURITE_BLOB
    port = free_port()
    location = scratch / "azurite"
    location.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(exe),
        "--blobHost", "127.0.0.1",
        "--blobPort", str(port),
        "--location", str(location),
        "--skipApiVersionCheck",
        "--silent",
        "--disableTelemetry",
    ]  # fmt: skip
    stack.enter_context(_stand_in(cmd, port, logs, "azurite"))
    conn = {"conn_type": "wasb", "extra": {"connection_string": azurite_connection_string(port)}}
    return {"AIRFLOW_CONN_AZURE_BENCH": json.dumps(conn)}


def fakesnow(stack: contextlib.ExitStack, logs: Path, scratch: Path) -> dict[str, str]:
    from tests.services._proc import free_port
    from tests.services.fakesnow import snowflake_connection_json

    port = free_port()
    tmpdir = scratch / "fakesnow-tmp"  # its stage uploads, never removed by fakesnow
    tmpdir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "tests.services._fakesnow_server", "-s", "-p", str(port)]
    stack.enter_context(_stand_in(cmd, port, logs, "fakesnow", env={"TMPDIR": str(tmpdir)}))
    conn = json.loads(snowflake_connection_json(port))
    conn["extra"]["network_timeout"] = 3600  # a large COPY or MERGE is not a stuck server
    return {"AIRFLOW_CONN_SNOWFLAKE_BENCH": json.dumps(conn)}


def postgres(stack: contextlib.ExitStack, logs: Path) -> dict[str, str] | None:
    """tests/services/postgres.py's server, started the same way (initdb, trust, loopback)."""
    from tests.services import postgres as pg
    from tests.services._proc import free_port

    if not (pg.PG_BIN / "postgres").exists():
        return None
    prefix = pg._as_server_user()
    root = Path(tempfile.mkdtemp(prefix="ap-bench-postgres-"))
    stack.callback(shutil.rmtree, root, ignore_errors=True)
    data, sockets = root / "data", root / "run"
    sockets.mkdir()
    if prefix:
        shutil.chown(root, pg.PG_USER)
        shutil.chown(sockets, pg.PG_USER)
    initdb = [str(pg.PG_BIN / "initdb"), "-D", str(data), "-U", pg.PG_USER, "--auth=trust"]
    initdb += ["--no-sync", "--encoding=UTF8", "--locale=C"]
    subprocess.run([*prefix, *initdb], check=True, capture_output=True)
    port = free_port()
    cmd = [*prefix, str(pg.PG_BIN / "postgres"), "-D", str(data), "-p", str(port)]
    cmd += ["-k", str(sockets), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]
    cmd += ["-c", "synchronous_commit=off", "-c", "full_page_writes=off"]

    def ready() -> None:
        isready = [str(pg.PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-q"]
        deadline = time.monotonic() + 30
        while subprocess.run(isready, check=False).returncode:
            if time.monotonic() > deadline:
                raise TimeoutError("PostgreSQL did not become ready")
            time.sleep(0.1)

    stack.enter_context(_stand_in(cmd, port, logs, "postgres", ready=ready))
    psql = [str(pg.PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", pg.PG_USER]
    schema = ENTRIES["sql"]["schema"]  # the DBA's job: the destination never creates schemas
    subprocess.run([*psql, "-qc", f"CREATE SCHEMA {schema}"], check=True, capture_output=True)
    return {"AIRFLOW_CONN_PG_BENCH": pg.postgres_connection_json(port)}


def kafka(stack: contextlib.ExitStack, logs: Path) -> dict[str, str]:
    from tests.services._proc import free_port

    port = free_port()
    cmd = [sys.executable, "-m", "tests.services.kafka_mock", "serve", str(port)]
    stack.enter_context(_stand_in(cmd, port, logs, "kafka_mock"))
    with socket.create_connection(("127.0.0.1", port), 10) as conn:
        bootstrap = conn.recv(4096).decode()
    conn_json = {"conn_type": "kafka", "extra": {"bootstrap.servers": bootstrap}}
    return {"AIRFLOW_CONN_KAFKA_BENCH": json.dumps(conn_json)}


def dotdigital(stack: contextlib.ExitStack, logs: Path, scratch: Path) -> dict[str, str]:
    from tests.services._proc import free_port
    from tests.services.dotdigital_standin import API_PASSWORD, API_USER

    port = free_port()
    cmd = [sys.executable, __file__, "--serve-dotdigital", str(port)]
    stack.enter_context(_stand_in(cmd, port, logs, "dotdigital"))
    conn = {
        "conn_type": "http",
        "host": f"http://127.0.0.1:{port}",
        "login": API_USER,
        "password": API_PASSWORD,
        "extra": {"region": "r1"},
    }
    return {"AIRFLOW_CONN_DOTDIGITAL_BENCH": json.dumps(conn)}


def serve_moto(port: int) -> None:
    """``moto_server`` (as tests/services/moto.py runs it), with one fix: a Kinesis shard finds
    its last sequence number with ``list(records)[-1]``, a copy of every record in the shard
    per record put, so PutRecords slowed from 150 calls a minute to 20 within 4 minutes and
    the bench measured moto, not the destination."""
    from moto.kinesis.models import Shard
    from moto.server import main

    Shard.get_max_sequence_number = lambda self: next(reversed(self.records), 0)
    main(["-H", "127.0.0.1", "-p", str(port)])


def serve_dotdigital(port: int) -> None:
    """tests/services/dotdigital_standin.py's server, in a process of its own."""
    from http.server import ThreadingHTTPServer

    from tests.services.dotdigital_standin import DotdigitalStandIn, _Handler

    standin = DotdigitalStandIn()
    handler = type("Handler", (_Handler,), {"standin": standin})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    standin.url = f"http://127.0.0.1:{port}"
    server.serve_forever()


# --- the run ----------------------------------------------------------------------------------


def mib(kib: int) -> float:
    return kib / 1024


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def deliver_kind(kind: str, tables, counts, scratch: Path, logs: Path, timeout: float) -> dict:
    """Start the kind's stand-in, deliver to it in a child, stop the stand-in."""
    work = scratch / kind
    work.mkdir(parents=True, exist_ok=True)
    extra: dict = {}
    with contextlib.ExitStack() as stack:
        env: dict[str, str] | None
        if kind == "local":
            env, extra = {}, {"path": str(work / "output")}
        elif kind in ("s3", "kinesis", "firehose"):
            url, env = moto(stack, logs)
            aws_targets(url, kind)
        elif kind == "azure":
            env = azurite(stack, logs, work)
        elif kind == "snowflake":
            env = fakesnow(stack, logs, work)
        elif kind == "sql":
            env = postgres(stack, logs)
        elif kind == "kafka":
            env = kafka(stack, logs)
        else:
            env = dotdigital(stack, logs, work)
            extra = {"state_path": str(work / "state" / "dotdigital.duckdb")}
        if env is None:
            return {"skipped": f"no stand-in for {kind} on this machine"}
        config = write_config(kind, work, extra)
        env = {
            **env,
            "AIRFLOW_HOME": str(work / "airflow"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{work / 'airflow' / 'airflow.db'}",
            "TMPDIR": str(work / "tmp"),
        }
        (work / "tmp").mkdir(exist_ok=True)
        (work / "airflow").mkdir(exist_ok=True)
        payload = {"config": str(config), "name": f"bench_{kind}", "tables": tables}
        payload["scratch"] = str(work)
        load_before = load()
        result = run_child(payload, env, timeout)
        result["load_before"], result["load_after"] = load_before, load()
        result["tables"] = {t: counts[t] for t in ENTRIES[kind]["tables"]}
        return result


def print_row(kind: str, label: str, result: dict) -> None:
    if "skipped" in result:
        print(f"{kind:<11} {label:>11}  skipped: {result['skipped']}", flush=True)
        return
    rss = mib(result["peak_rss_kib"])
    if "error" in result:
        print(
            f"{kind:<11} {label:>11}  FAILED after {result['wall_seconds']:.1f} s "
            f"(peak RSS {rss:.0f} MiB, load {result['load_before']} -> {result['load_after']}): "
            f"{result['error']}",
            flush=True,
        )
        for line in result.get("log_tail", "").strip().splitlines()[-12:]:
            print(f"    | {line}")
        print(f"    full log: {result['log']}")
        return
    rows = sum(v for v in result["rows"].values() if isinstance(v, int))
    rate = rows / result["seconds"] if result["seconds"] else 0.0
    print(
        f"{kind:<11} {label:>11} {rows:>11,} {result['seconds']:>9.1f} {rate:>10,.0f} "
        f"{rss:>9.0f}  {result['load_before']} -> {result['load_after']}",
        flush=True,
    )
    print(f"    rows: {json.dumps(result['rows'])}")
    print(f"    tables in: {json.dumps(result['tables'])}")
    if kind == "dotdigital":  # contacts per segment, consent records sent
        print(f"    segments: {json.dumps(result['details'].get('segments'))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exports", help="a run's export folder (<work>/runs/<ds>/export)")
    parser.add_argument(
        "--size",
        type=int,
        help="instead of --exports: the latest exports bench_build.py made for this size",
    )
    parser.add_argument(
        "--bench-work", default=BENCH_WORK, help="bench_build.py's --work (for --size)"
    )
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument(
        "--max-rows", type=int, default=None, help="deliver only the first N rows of each table"
    )
    parser.add_argument(
        "--timeout", type=float, default=3600, help="stop a delivery after this many seconds"
    )
    parser.add_argument("--work", default="/tmp/audience-profiles-bench-deliver")
    parser.add_argument("--json", help="also write every result to this file")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--serve-dotdigital", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-moto", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve_moto:
        serve_moto(args.serve_moto)
        return
    if args.serve_dotdigital:
        serve_dotdigital(args.serve_dotdigital)
        return
    if args.child:
        payload, out = args.child
        try:
            result = child_deliver(json.loads(payload))
        except BaseException as exc:  # reported by the parent, with the log's tail
            result = {"error": f"{type(exc).__name__}: {str(exc)[:2000]}"}
            Path(out).write_text(json.dumps(result, default=str))
            raise
        result["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        Path(out).write_text(json.dumps(result, default=str))
        return
    # A SIGTERM unwinds like a Ctrl-C, so the stand-in services and the running delivery stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    if args.size and not args.exports:
        runs = sorted(Path(args.bench_work).glob(f"n{args.size}/build/work/runs/*/export"))
        if not runs:
            parser.error(
                f"no exports under {args.bench_work}/n{args.size}: run bench_build.py first"
            )
        args.exports = str(runs[-1])
    if not args.exports:
        parser.error("--exports or --size is required")

    exports = Path(args.exports)
    name = f"n{args.size}" if args.size else exports.name  # bench_build's exports are "export"
    scratch = Path(args.work) / name
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    logs = scratch / "logs"
    tables = prepare_tables(exports, scratch, args.max_rows)
    counts = row_counts(tables)
    label = name + (f"/cap{args.max_rows}" if args.max_rows else "")
    print(f"exports: {exports} ({os.cpu_count()} cores, load average {load()})")
    if args.max_rows:
        print(f"CAPPED: every table is its first {args.max_rows:,} rows (--max-rows)")
    print("tables: " + ", ".join(f"{t} {n:,}" for t, n in counts.items()))
    print(
        f"{'kind':<11} {'size':>11} {'rows':>11} {'seconds':>9} {'rows/s':>10} "
        f"{'peak MiB':>9}  load average (1/5/15 min) before -> after"
    )
    results = {}
    for kind in args.kinds:
        result = deliver_kind(kind, tables, counts, scratch, logs, args.timeout)
        results[kind] = result
        print_row(kind, label, result)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
