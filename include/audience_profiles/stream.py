"""The near-real-time path: micro-batches of newly landed files, emitted to stream destinations.

One call of :func:`run_batch` is one micro-batch (one task of the ``audience_profiles_stream``
DAG). It finds its files one of two ways:

- **events**: the S3 object-created notifications an SQS ``MessageQueueTrigger`` received (S3's
  own or EventBridge's; fast, but at-most-once: the trigger deletes the messages before any DAG
  run exists);
- **reconcile**: a listing of the landing root, per source, of every file modified at or after
  the source's watermark minus ``lookback_seconds`` that the ledger has not seen in that
  version. This is what makes a lost message, or a slow upload, harmless; local folders only
  use this.

Then, holding the warehouse (one writer: the DAG runs this in the warehouse pool):

1. stage the files (``landing.stage_files``) and validate them with the daily validate SQL, run
   in a scratch schema (``stream_batch``) so no daily partition is overwritten;
2. add them to the source tables keyed by file (``stream/merge.sql``): a file's rows are
   replaced, nothing else is touched;
3. resolve identities against the current state (the daily ``profile_identifiers`` plus what the
   stream attached since), with identity.yml's rules and the daily anchor rule for new profiles;
4. rebuild the touched profiles with the daily profile SQL, pick the interactions to emit;
5. deliver ``profile_merges``, ``audience_profiles`` (profile_upsert) and
   ``audience_profile_interactions`` (interaction) to every stream destination (streams.py's
   record schema);
6. only then commit the ledger (``stream_files``), the attached identifiers and the watermarks.

A crash anywhere before step 6 leaves the ledger and watermarks as they were: the next run takes
the same files again and emits the same records with the same record_ids (at-least-once).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from audience_profiles import landing
from audience_profiles.config import (
    ConfigError,
    DestinationConfig,
    PipelineConfig,
    load_config,
    stream_kinds,
)
from audience_profiles.destinations import Destination, RunInfo, destination_for
from audience_profiles.destinations.streams import BatchedStreamDestination
from audience_profiles.identity import (
    IdentityRules,
    connected_components,
    label_as_of,
    load_rules,
)
from audience_profiles.pipeline import (
    VALIDATED_TARGETS,
    ReconciliationError,
    RunWindow,
    aged_out_partitions,
    files_off,
    latest_allowed_date,
    rows_by_file,
)
from audience_profiles.privacy import EMAIL_PATTERN
from audience_profiles.privacy.retention import cutoffs_as_of, latest_dates
from audience_profiles.privacy.suppression import (
    apply_suppression,
    suppress_run_outputs,
    suppression_count,
    unlist_placeholders,
)
from audience_profiles.warehouse import open_warehouse
from audience_profiles.warehouse.base import Warehouse

log = logging.getLogger(__name__)

# elements first: the batch's interactions are enriched with the catalogue it may bring
SOURCES = ("elements", "interactions", "form_entries", "identities")
BATCH_SCHEMA = "stream_batch"
WORK_SCHEMA = "stream_work"
S3_GETS_AT_ONCE = 8  # boto3 clients are thread-safe; its connection pool holds 10
# "As of everything landed": the daily SQL takes a cutoff date and time.
ALL_DS = "9999-12-31"
ALL_TS = "9999-12-31 00:00:00"
EXPORTS = {
    "profile_merges": "merged_profile_id",
    "audience_profiles": "profile_id",
    "audience_profile_interactions": "profile_id, interaction_date, event_id, poll_id, session_id",
}


@dataclass(frozen=True)
class StreamSettings:
    """The optional ``stream:`` section of pipeline.yml."""

    lookback: dt.timedelta
    destinations: tuple[DestinationConfig, ...]

    @classmethod
    def from_config(cls, config: PipelineConfig) -> StreamSettings:
        """From ``config.stream`` (parsed and checked when the file loads)."""
        kinds = stream_kinds()
        streams = [d for d in config.enabled_destinations if d.kind in kinds]
        names = config.stream.destinations
        if names is not None:
            unknown = sorted(set(names) - {d.name for d in streams})
            if unknown:
                raise ConfigError(
                    f"{config.source_file}: stream.destinations names no enabled stream "
                    f"destination ({', '.join(kinds)}): {', '.join(unknown)}"
                )
            streams = [d for d in streams if d.name in names]
        return cls(dt.timedelta(seconds=config.stream.lookback_seconds), tuple(streams))


@dataclass(frozen=True)
class LandedFile:
    source: str
    name: str  # the file's ``_file`` everywhere: a local path, or s3://bucket/key
    ds: str | None  # its landing partition date (None for the element catalogue)
    version: str  # S3 ETag, or mtime_ns-size for a local file
    modified: dt.datetime  # naive UTC


class Landing:
    """The landing root of pipeline.yml, file by file: a local folder or ``s3://bucket/prefix``."""

    def __init__(self, root: str, conn_id: str | None):
        self.root = root
        self.conn_id = conn_id
        # (name, modified) of files under a source that no step reads (part-0.csv.7z, a .txt):
        # the daily extract fails on them; a batch warns (warn_unread) rather than skip quietly.
        self.unread: list[tuple[str, dt.datetime]] = []
        self.is_s3 = root.startswith("s3://")
        if self.is_s3:
            self.bucket, _, prefix = root.removeprefix("s3://").partition("/")
            self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""

    def classify(self, relative: str) -> tuple[str, str | None] | None:
        """(source, ds) of a path below the root, or None when it is not a landing data file."""
        parts = relative.split("/")
        source = landing.SOURCES.get(parts[0])
        if source is None or not landing.is_data_file(parts[-1]):
            return None
        if not source.partitioned:
            return (source.name, None) if len(parts) == 2 else None
        ds = landing.partition_date(parts[1]) if len(parts) == 3 else None
        return (source.name, ds) if ds else None

    def _note_unread(self, relative: str, name: str, modified: dt.datetime) -> None:
        """Note a file the daily extract would fail on (``landing._check_source_folder`` and
        ``_check_no_unread_files``): one directly in a partition folder (or in an unpartitioned
        source's folder) that is neither read nor a writer's marker, a data file outside any
        partition, a file in a folder named as a partition but not ``date=YYYY-MM-DD``, or one
        in a partition's sub-folder. A writer's (``_temporary/``) and S3 folder keys are not the
        extract's concern, nor is the element catalogue landed a level too deep (the extract
        fails on it only when ``elements/`` holds no file itself, which one file cannot tell)."""
        parts = relative.split("/")
        source = landing.SOURCES.get(parts[0])
        if source is None or not parts[-1] or landing.is_hidden(parts[-1]):
            return
        if not source.partitioned:
            unread = len(parts) == 2 and not landing.is_data_file(parts[-1])
        elif len(parts) == 2:  # beside the partitions
            unread = landing.is_stray(parts[1], is_folder=False)
        elif len(parts) == 3:  # in a misnamed partition, or unread in a partition
            unread = landing.is_stray(parts[1], is_folder=True) or (
                landing.partition_date(parts[1]) is not None and not landing.is_data_file(parts[-1])
            )
        else:  # deeper: in a sub-folder of a partition, or of a misnamed one
            unread = not any(landing.is_hidden(p) for p in parts[1:-1]) and (
                landing.partition_date(parts[1]) is not None
                or landing.is_stray(parts[1], is_folder=True)
            )
        if unread:
            self.unread.append((name, modified))

    def warn_unread(self) -> list[str]:
        """Log the unread files noted since the last call, and return their names."""
        names = sorted({name for name, _ in self.unread})
        self.unread = []
        if names:
            log.warning(
                "%s file(s) under %s are not read: %s (it reads %s; names starting with _ or . "
                "are ignored). Not streamed, and the daily extract of their date fails on them: "
                "convert, rename or move them",
                len(names),
                self.root,
                landing.some_names(names),
                landing.FILE_SUFFIXES_IN_WORDS,
            )
        return names

    @functools.cached_property
    def _s3(self):
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook  # heavy: only when used

        return S3Hook(aws_conn_id=self.conn_id)

    def connect(self) -> None:
        """Create the S3 client now (run_batch does it in a thread while DuckDB works)."""
        if self.is_s3:
            self._s3.get_conn()

    def list_source(self, source: str, since: dt.datetime | None = None) -> list[LandedFile]:
        """Every data file of one source, all partitions; unread files modified after ``since``
        are noted (``unread``)."""
        if self.is_s3:
            out = []
            for obj in self._s3.iter_file_metadata(f"{self.prefix}{source}/", self.bucket):
                relative = obj["Key"].removeprefix(self.prefix)
                where = self.classify(relative)
                modified = obj["LastModified"].astimezone(dt.UTC).replace(tzinfo=None)
                if since is None or modified > since:
                    self._note_unread(relative, f"s3://{self.bucket}/{obj['Key']}", modified)
                if where:
                    out.append(
                        LandedFile(
                            where[0],
                            f"s3://{self.bucket}/{obj['Key']}",
                            where[1],
                            landing.s3_version(obj["ETag"]),
                            modified,
                        )
                    )
            return out
        base = Path(self.root)
        root = base.resolve()
        out = []
        folder = base / source
        # rglob follows no link below the source's folder, which may be one itself: only links
        # reached so need the landing extract's check (landing.refused_local_file)
        if folder.is_symlink() and not folder.resolve().is_relative_to(root):
            log.warning(
                "%s: leads outside the landing folder (a linked folder): not streamed, and the "
                "daily extracts fail on it",
                folder,
            )
            return out
        for path in sorted(folder.rglob("*")):
            if path.is_symlink():
                if path.is_dir() and path.resolve().is_relative_to(root):
                    continue  # a folder linked within the landing: the daily extract reads it
                refused = landing.refused_local_file(path, root)
                if refused:
                    changed = dt.datetime.fromtimestamp(path.lstat().st_mtime, dt.UTC)
                    if since is None or changed.replace(tzinfo=None) > since:
                        log.warning("%s: not streamed, and the daily extract fails on it", refused)
                    continue
            if not path.is_file():
                continue
            relative = path.relative_to(base).as_posix()
            where = self.classify(relative)
            stat = path.stat()
            # The content's time, not the inode's: a chmod must not bring back a file the ledger
            # has forgotten. A file moved in keeps its old mtime: touch it (docs/streams.md).
            modified = dt.datetime.fromtimestamp(stat.st_mtime, dt.UTC).replace(tzinfo=None)
            if since is None or modified > since:
                self._note_unread(relative, str(path), modified)
            if where:
                version = landing.local_version(stat)
                out.append(LandedFile(where[0], str(path), where[1], version, modified))
        return out

    def from_s3_record(self, record: dict) -> LandedFile | None:
        """The landing file an S3 event record announces; None for objects outside the root."""
        s3 = record.get("s3") or {}
        bucket = (s3.get("bucket") or {}).get("name")
        obj = s3.get("object") or {}
        key = unquote_plus(obj.get("key", ""))  # S3 event keys are form-encoded
        if not self.is_s3 or bucket != self.bucket or not key.startswith(self.prefix):
            return None
        where = self.classify(key.removeprefix(self.prefix))
        when = _event_time(record)
        self._note_unread(key.removeprefix(self.prefix), f"s3://{bucket}/{key}", when)
        if not where:
            return None
        return LandedFile(
            where[0],
            f"s3://{bucket}/{key}",
            where[1],
            landing.s3_version(obj.get("eTag", "")),
            when.astimezone(dt.UTC).replace(tzinfo=None),
        )

    @contextlib.contextmanager
    def local_copies(self, files: list[LandedFile], folder: Path) -> Iterator[dict[str, Path]]:
        """``file name -> local path``; S3 objects are downloaded into ``folder`` first. An
        object deleted since it was announced or listed has no entry."""
        if not self.is_s3:
            yield {f.name: Path(f.name) for f in files}
            return
        from botocore.exceptions import ClientError

        client = self._s3.get_conn()

        def fetch(i: int, f: LandedFile) -> Path | None:
            key = f.name.removeprefix(f"s3://{self.bucket}/")
            target = folder / f"{i:05d}-{Path(key).name}"
            try:
                body = client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    return None
                raise
            target.write_bytes(body)
            return target

        # One plain GET per file (landing files are small: the transfer manager costs more than
        # it saves), several at once so a burst does not wait for its files one by one.
        with ThreadPoolExecutor(min(S3_GETS_AT_ONCE, len(files) or 1)) as pool:
            targets = list(pool.map(fetch, range(len(files)), files))
        yield {f.name: t for f, t in zip(files, targets, strict=True) if t is not None}


def s3_records(event_extras: Iterable[dict]) -> list[dict]:
    """S3 object-created records in the asset events of the SQS ``MessageQueueTrigger``.

    Each asset event's extra is ``{"from_trigger": True, "payload": {"message_batch": [...]}}``;
    a message Body is an S3 notification (or an SNS envelope around one), or an S3 event that an
    EventBridge rule sent to the queue (taken as the record it stands for:
    :func:`eventbridge_record`). moto's and S3's ``s3:TestEvent`` carries no records and is
    skipped.
    """
    records = []
    for extra in event_extras:
        payload = (extra or {}).get("payload") or {}
        for message in payload.get("message_batch") or []:
            try:
                body = json.loads(message.get("Body") or "{}")
                if isinstance(body, dict) and "Records" not in body and "Message" in body:
                    body = json.loads(body["Message"])  # delivered through SNS
                if not isinstance(body, dict):  # a list, a string, a number: not a notification
                    raise TypeError(type(body).__name__)
            except (TypeError, ValueError):
                log.warning(
                    "skipping an SQS message that is not a JSON object: %s",
                    message.get("MessageId"),
                )
                continue
            if body.get("source") == "aws.s3" and "detail" in body:
                if body.get("detail-type") != "Object Created":
                    continue  # deleted, restored...: as a notification's other records are
                record = eventbridge_record(body)
                if record is None:
                    log.warning(
                        "skipping an SQS message whose S3 Object Created event (EventBridge) "
                        "has no bucket, key or time: %s",
                        message.get("MessageId"),
                    )
                    continue
                body = {"Records": [record]}
            if "Records" not in body:
                if body.get("Event") != "s3:TestEvent":  # sent once when notifications are set up
                    # another sender's
                    log.warning(
                        "skipping an SQS message that holds no S3 event notification: %s",
                        message.get("MessageId"),
                    )
                continue
            announced = body["Records"] or []
            if not isinstance(announced, list) or not all(map(_is_s3_record, announced)):
                # S3 itself never sends this: something else wrote an object with a Records key.
                # The reconciliation listing still finds whatever landed.
                log.warning(
                    "skipping an SQS message whose Records are not S3 event records: %s",
                    message.get("MessageId"),
                )
                continue
            records += [r for r in announced if r["eventName"].startswith("ObjectCreated")]
    return records


def eventbridge_record(event: dict) -> dict | None:
    """The S3 event record an EventBridge ``Object Created`` event from S3 stands for; None for
    one without a bucket, key or time.

    Its fields differ from a notification's: the key is not form-encoded (so it is encoded here,
    as ``Landing.from_s3_record`` decodes), the ETag is ``etag`` (moto: ``eTag``), the time is
    the envelope's ``time`` to the second (moto: epoch seconds) and ``reason`` says which call
    made the object (``PutObject``, ``CompleteMultipartUpload``...).
    """
    detail = event.get("detail")
    if not isinstance(detail, dict):
        return None
    bucket, obj = detail.get("bucket"), detail.get("object")
    if not isinstance(bucket, dict) or not isinstance(obj, dict):
        return None
    name, key, when = bucket.get("name"), obj.get("key"), event.get("time")
    if isinstance(when, int | float) and not isinstance(when, bool):
        try:
            when = dt.datetime.fromtimestamp(when, dt.UTC).isoformat().replace("+00:00", "Z")
        except (OverflowError, OSError, ValueError):  # no time a file could have landed at
            return None
    if not (isinstance(name, str) and isinstance(key, str) and isinstance(when, str)):
        return None
    return {
        "eventName": f"ObjectCreated:{detail.get('reason') or 'Put'}",
        "eventTime": when,
        "s3": {
            "bucket": {"name": name},
            "object": {"key": quote_plus(key), "eTag": obj.get("etag", obj.get("eTag", ""))},
        },
    }


def _is_s3_record(record: Any) -> bool:
    """Whether ``record`` has the shape of an S3 event record, in the fields the stream reads
    (``Landing.from_s3_record``): anything else would fail the run on a KeyError or a
    TypeError, holding up the batch's other notifications."""
    if not isinstance(record, dict) or not isinstance(record.get("eventName"), str):
        return False
    s3 = record.get("s3")
    if not isinstance(s3, dict) or not isinstance(s3.get("bucket"), dict):
        return False
    obj = s3.get("object")
    if not isinstance(obj, dict) or not isinstance(obj.get("key"), str):
        return False
    if not isinstance(obj.get("eTag", ""), str) or not isinstance(record.get("eventTime"), str):
        return False
    try:
        _event_time(record)
    except ValueError:
        return False
    return True


def _event_time(record: dict) -> dt.datetime:
    """When an S3 event record says its object changed (``...Z``, as S3 writes it)."""
    return dt.datetime.fromisoformat(record["eventTime"].replace("Z", "+00:00"))


def landing_event_extras(context: Mapping[str, Any], asset: Any) -> list[dict] | None:
    """The extras of every landing asset event a run must look at; None for a scheduled run.

    Not only the run's triggering events. Airflow's scheduler (3.3, ``AssetDagRunQueue``) queues
    a DAG once per asset until it creates the run, gives that run the events up to the one that
    queued it, and drops the queue entry: events stored in between (a burst, or anything that
    arrives while the previous run holds ``max_active_runs``) reach a run only when a later event
    queues the next one, and never if none comes. Every such event is stored before this run was
    created, so the run reads all the asset's events since its earliest triggering one; the ledger
    skips files an earlier run already emitted. ``asset`` must be one of the task's inlets.
    """
    triggering = [e for events in context["triggering_asset_events"].values() for e in events]
    if not triggering:
        return None
    since = min(e.timestamp for e in triggering)
    return [e.extra for e in context["inlet_events"][asset].after(since.isoformat())]


@contextlib.contextmanager
def _using(wh: Warehouse, schema: str, home: str) -> Iterator[None]:
    """Unqualified table names resolve to ``schema`` inside the block (the daily SQL is unqualified)."""
    wh.run_sql("stream/use", schema=schema)
    try:
        yield
    finally:
        wh.run_sql("stream/use", schema=home)


def _name(f: LandedFile) -> str:
    return f.name


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _ts(value: dt.datetime) -> str:
    return value.isoformat(sep=" ", timespec="microseconds")


def _select_candidates(
    wh: Warehouse, landing_: Landing, lookback: dt.timedelta, records: list[dict] | None
) -> tuple[list[LandedFile], dict[str, dt.datetime], dict[str, dt.datetime]]:
    """The batch's files, and (reconcile only) each source's new watermark and ledger floor."""
    ledger = dict(wh.query("SELECT file, version FROM stream_files"))
    landing_.unread = []
    if records is not None:
        latest: dict[str, LandedFile] = {}
        for record in records:
            f = landing_.from_s3_record(record)
            if f and (f.name not in latest or f.modified >= latest[f.name].modified):
                latest[f.name] = f
        return [f for f in latest.values() if ledger.get(f.name) != f.version], {}, {}
    stored = dict(wh.query("SELECT source, watermark FROM stream_watermarks"))
    candidates, marks, floors = [], {}, {}
    for source in SOURCES:
        # A file counts towards the watermark at most up to the moment its listing started: one
        # dated ahead of the clock (a skewed host, `cp -p`, `touch -d`) must not lift the
        # watermark past files that land normally afterwards. A mark already ahead is pulled back.
        started = _now()
        # First run: the stream starts a lookback ago (history is the daily build's job).
        mark = min(stored.get(source) or started - lookback, started)
        floor = mark - lookback
        # At the floor too: a file landing after the listing that set the watermark can share
        # its time (S3 keeps whole seconds); the ledger skips the ones already taken.
        listed = [f for f in landing_.list_source(source, since=floor) if f.modified >= floor]
        candidates += [f for f in listed if ledger.get(f.name) != f.version]
        marks[source] = max([mark, *(min(f.modified, started) for f in listed)])
        floors[source] = marks[source] - lookback
    return candidates, marks, floors


def _refuse_future(files: list[LandedFile]) -> tuple[list[LandedFile], list[LandedFile]]:
    """(kept, refused): files of a partition dated more than a day after today are refused.

    A mistyped date (``date=2202-05-01``) would be the batch's ``as_of`` and, as_of never going
    down, block every later upsert at consumers. Such a file is left out of the batch and of the
    ledger, logged as an error each time it is seen; move it to its right partition (a new
    version) and it is taken like any other file.
    """
    limit = latest_allowed_date()  # the daily runs' rule (pipeline.logical_ds)
    refused = [f for f in files if f.ds and f.ds > limit]
    for f in refused:
        log.error(
            "refused %s: its partition date=%s is after %s (tomorrow, UTC): a mistyped date? "
            "Not streamed; land it in its right partition",
            f.name,
            f.ds,
            limit,
        )
    return [f for f in files if f not in refused], refused


def _batch_as_of(wh: Warehouse, files: list[LandedFile]) -> str:
    """The batch's as_of: never lower than what the stream already emitted or the daily published.

    The greater of the batch's landing dates, the highest as_of a batch emitted (``stream_batches``,
    and the ledger's landing dates), and the latest published date: a consumer applies an upsert
    only if its as_of is not older than what it holds (docs/streams.md), so a late file for an old
    partition must not go out with that old date. Today (UTC) when there is none of these; the
    day after that date while its daily build is under way.
    """
    dates = [f.ds for f in files if f.ds] + latest_dates(
        wh, (("stream_batches", "as_of"), ("stream_files", "ds"), ("published_snapshots", "dt"))
    )
    as_of = max(dates, default=_now().date().isoformat())
    # The daily build of that date under way (its identity build started, its run schema not
    # cleaned up yet): this batch's state holds rows that build may not have read, and the build
    # is delivered later with the same as_of, which consumers apply on a tie. The day after, so
    # that delivery does not roll the batch's profiles back (its own daily build confirms them).
    after = (dt.date.fromisoformat(as_of) + dt.timedelta(days=1)).isoformat()
    if after <= latest_allowed_date() and _building(wh, RunWindow.for_date(as_of)):
        return after
    return as_of


def _building(wh: Warehouse, window: RunWindow) -> bool:
    """Whether the daily build of ``window``'s date has started and not been cleaned up."""
    return "build_started" in wh.table_names(window.run_schema_in(wh), views=False)


def _stage(
    landing_: Landing, files: list[LandedFile], folder: Path
) -> tuple[dict[tuple[str, str | None], dict], dict[str, str]]:
    """Fetch the batch's files and stage them per (source, partition), as the daily extract does;
    also return the files that cannot be read (name -> why): left out of the batch. With one of
    the catalogue's files unreadable, the catalogue is left out whole."""
    groups: dict[tuple[str, str | None], list[LandedFile]] = {}
    for f in files:
        groups.setdefault((f.source, f.ds), []).append(f)
    if any(source == "elements" for source, _ in groups):
        # The catalogue is validated whole (validate/elements.sql replaces it), not file by file.
        groups[("elements", None)] = landing_.list_source("elements")
    staged = {}
    unreadable: dict[str, str] = {}
    with landing_.local_copies([f for g in groups.values() for f in g], folder) as local:
        for source, ds in sorted(groups, key=lambda key: (SOURCES.index(key[0]), key[1] or "")):
            # deleted since its event or the listing (an upload taken back): nothing to read, and
            # nothing lost, as a new upload under its name is a new version
            gone = {
                f.name: f"{f.name}: not in the landing any more (deleted since it was announced)"
                for f in groups[source, ds]
                if f.name not in local
            }
            unreadable.update(gone)
            pairs = [
                (f.name, local[f.name])
                for f in sorted(groups[source, ds], key=_name)
                if f.name in local
            ]
            if not pairs or (gone and source == "elements"):
                continue  # (the catalogue goes whole or not at all: validate replaces it)
            out = folder / f"{source}-{ds or 'all'}.parquet"
            try:
                staged[source, ds] = landing.stage_files(source, pairs, out)
                continue
            except landing.LandingError:
                pass
            # One file the pipeline cannot read must not hold back every file landed after it:
            # it is left out (and out of the ledger, so a fixed version is taken), the rest go.
            bad = {}
            for name, path in pairs:
                try:
                    landing.stage_files(source, [(name, path)], folder / "one-file.parquet")
                except landing.LandingError as exc:
                    bad[name] = str(exc)
            unreadable.update(bad)
            if source == "elements":
                continue  # the catalogue goes whole or not at all: validate replaces it
            pairs = [(name, path) for name, path in pairs if name not in bad]
            if pairs:
                staged[source, ds] = landing.stage_files(source, pairs, out)
    return staged, unreadable


def _validate(
    wh: Warehouse,
    staged: dict[tuple[str, str | None], dict],
    files: list[LandedFile],
    as_of: str,
    home: str,
    identity_rules: IdentityRules,
    past: dict[str, str],
) -> dict[str, dict[str, int]]:
    """Validate the batch into the scratch schema with the daily validate SQL; reconcile counts.

    ``past`` holds the retention cutoffs (target -> first date kept) the daily run respects
    (``retention.cutoffs_as_of``): what a partition before its cutoff brings is counted as
    ``aged_out``, not loaded or emitted, and read = kept + quarantined + aged out.
    """
    # placeholders leave the warehouse's list before the batch copies it (the batch schema has
    # no erasure requests of its own to mark invalid)
    unlist_placeholders(wh, identity_rules)
    bs = wh.scratch_schema(BATCH_SCHEMA)
    wh.execute_script(f"DROP SCHEMA IF EXISTS {bs} CASCADE; CREATE SCHEMA {bs}")
    counts: dict[str, dict[str, int]] = {}
    # file -> (read, valid, quarantined, aged out): landed_files' counts (validate/file_counts)
    file_counts: dict[str, tuple[int, ...]] = {}
    with _using(wh, bs, home):
        wh.run_sql("setup/tables")
        for source, ds in staged:
            info = staged[source, ds]
            relation = wh.staged_relation(info["path"])  # on Snowflake, a COPY: made once
            wh.run_sql(
                f"validate/{source}",
                ds=ds or as_of,
                staged=relation,
                email_pattern=EMAIL_PATTERN,
                write_quarantine=True,  # (the batch's: merge.sql leaves the elements' out)
            )
            aged_out = 0
            counted: list[str] = []  # the source's files in file_counts
            if ds:
                expired = {t: c for t, c in past.items() if ds < c}
                drop = aged_out_partitions(source, ds, expired)
                for file, *rows in wh.query_sql(
                    "validate/file_counts", source=source, aged_out=[t for t, _ in drop]
                ):
                    file_counts[file] = tuple(int(n) for n in rows)
                    counted.append(file)
                for table, condition in drop:
                    aged_out += wh.query(f"SELECT count(*) FROM {table} WHERE {condition}")[0][0]
                    wh.execute_script(f"DELETE FROM {table} WHERE {condition}")
                if aged_out:
                    log.warning(
                        "stream batch, %s %s: %s row(s) past retention (%s): counted as aged "
                        "out, not loaded",
                        source,
                        ds,
                        aged_out,
                        ", ".join(f"{t} keeps dates from {c}" for t, c in sorted(expired.items())),
                    )
            partition = f" AND dt = DATE '{ds}'" if ds else ""
            kept = wh.query(f"SELECT count(*) FROM {source} WHERE true{partition}")[0][0]
            quarantined = wh.query(
                f"SELECT count(*) FROM quarantine WHERE source = '{source}'{partition}"
            )[0][0]
            if kept + quarantined + aged_out != info["rows"]:
                detail = ""
                if ds:  # per-file counts are a dated source's (the catalogue has none)
                    detail = files_off(
                        source,
                        {f: file_counts[f][:3] for f in counted},
                        **rows_by_file(wh, source, relation, f"dt = DATE '{ds}'"),
                    )
                raise ReconciliationError(
                    f"stream batch, {source} {ds or ''}: read {info['rows']} row(s) but kept "
                    f"{kept}, quarantined {quarantined} and aged out {aged_out}" + detail
                )
            total = counts.setdefault(source, {"files": 0, "read": 0, "quarantined": 0})
            total["files"] += info["files"]
            total["read"] += info["rows"]
            total["quarantined"] += quarantined
            if past:  # retention configured: read = valid + quarantined + aged_out
                total["aged_out"] = total.get("aged_out", 0) + aged_out
        # Suppressed people never reach a stream: filter the batch with the warehouse's list
        # (`suppress` rows are kept in restricted_*: stream/merge.sql).
        wh.execute_script(f"INSERT INTO suppression_list SELECT * FROM {home}.suppression_list")
        for day in sorted({ds for _, ds in staged if ds}):
            apply_suppression(wh, day, identity_rules)
        if ("elements", None) not in staged:
            # enrichment below joins the batch schema's catalogue: the warehouse's current one
            wh.execute_script(f"INSERT INTO elements SELECT * FROM {home}.elements")
        for source, ds in staged:
            if source == "interactions":
                wh.run_sql("enrich/interactions_enriched", ds=ds, dated=False, home=home)
    wh.run_sql("stream/batch_files", bs=bs, files=files, file_counts=file_counts)
    return counts


def _resolve(
    wh: Warehouse, config: PipelineConfig, home: str, interactions_cutoff: str | None
) -> dict[str, int]:
    """Identity for the batch against the current state, then the touched profiles."""
    bs, ws = wh.scratch_schema(BATCH_SCHEMA), wh.scratch_schema(WORK_SCHEMA)
    params = {"rs": ws, "bs": bs, "home": home}
    wh.execute_script(f"DROP SCHEMA IF EXISTS {ws} CASCADE; CREATE SCHEMA {ws}")
    identity_rules = load_rules(config.identity_config)
    wh.run_sql("stream/link_sources", **params, **identity_rules.sql_params())
    # Inside the work schema: the identity SQL's scratch tables are TEMP, and on Snowflake a
    # temporary table belongs to the schema it was created in.
    with _using(wh, ws, home):
        # the daily build's link rules, graph and components, on the batch's history
        _, id_params = label_as_of(wh, identity_rules, ALL_DS, ALL_TS)
        wh.run_sql(
            "stream/graph", **params, salt=id_params["salt"], suppressed=suppression_count(wh) > 0
        )
        connected_components(wh, "_s")
        wh.run_sql("stream/assign", **params, per_profile=list(identity_rules.per_profile))
        for suffix in ("", "_s"):
            wh.run_sql_steps("identity/drop_scratch", suffix=suffix, extra=[])
    wh.run_sql(
        "profiles/audience_profiles",
        rs=ws,
        ds=ALL_DS,
        interval_start=ALL_TS,
        interval_end=ALL_TS,
        run_id="stream",
        interactions_from=interactions_cutoff,  # as the daily build: not what retention removes
    )
    wh.run_sql("stream/interactions", **params, interactions_cutoff=interactions_cutoff)
    # As the daily publish does (suppression.suppress_run_outputs): profiles the suppression list
    # names leave the batch's outputs, and the stream attaches none of their identifiers.
    if suppress_run_outputs(wh, ws):
        wh.execute_script(
            f"DELETE FROM {ws}.audience_profile_interactions"
            " WHERE profile_id IN (SELECT profile_id FROM run_suppressed_profiles);"
            f" DELETE FROM {ws}.changed"
            " WHERE profile_id IN (SELECT profile_id FROM run_suppressed_profiles)"
        )
    profiles, interactions, merges, attached = wh.query(
        f"SELECT (SELECT count(*) FROM {ws}.audience_profiles),"
        f" (SELECT count(*) FROM {ws}.audience_profile_interactions),"
        f" (SELECT count(*) FROM {ws}.profile_merges),"
        f" (SELECT count(*) FROM {ws}.changed)"
    )[0]
    return {
        "profiles": profiles,
        "interactions": interactions,
        "merges": merges,
        "identifiers_attached": attached,
    }


def _emit(
    wh: Warehouse, destinations: list[Destination], folder: Path, as_of: str, run_id: str
) -> dict[str, dict[str, int]]:
    ws = wh.scratch_schema(WORK_SCHEMA)
    tables = {}
    for table, order in EXPORTS.items():
        path = str(folder / "export" / f"{table}.parquet")
        wh.export_parquet(f"SELECT * FROM {ws}.{table} ORDER BY {order}", path)
        tables[table] = path
    run = RunInfo(as_of, run_id)
    delivered = {}
    for dest in destinations:
        report = dest.deliver(run, tables)
        if report.failures:
            raise RuntimeError(f"{dest.config.name}: {report.failures[:10]}")
        delivered[dest.config.name] = report.rows
    return delivered


def commit(
    wh: Warehouse,
    *,
    batch: bool,
    as_of: str,
    run_id: str,
    watermarks: dict[str, dt.datetime],
    floors: dict[str, dt.datetime],
) -> None:
    """The batch's durable state, after delivery: ledger, attached identifiers, watermarks."""
    wh.run_sql(
        "stream/commit",
        batch=batch,
        rs=wh.scratch_schema(WORK_SCHEMA),
        bs=wh.scratch_schema(BATCH_SCHEMA),
        ds=as_of,
        run_id=run_id,
        watermarks={s: _ts(m) for s, m in watermarks.items()},
        floors={s: _ts(m) for s, m in floors.items()},
    )


def run_batch(
    config: PipelineConfig | None = None,
    *,
    run_id: str = "manual",
    records: list[dict] | None = None,
) -> dict[str, Any]:
    """Process one micro-batch; ``records`` are S3 event records (None: reconcile by listing).

    Returns a small summary for XCom, with ``seconds`` per step.
    """
    config = config or load_config()
    settings = StreamSettings.from_config(config)
    if not settings.destinations:
        log.warning("no enabled stream destination (%s): nothing to do", ", ".join(stream_kinds()))
        return {"mode": "skipped", "files": 0}
    mode = "reconcile" if records is None else "events"
    landing_ = Landing(config.landing_root, config.landing_conn_id)
    destinations = [destination_for(d, config) for d in settings.destinations]
    seconds: dict[str, float] = {}
    started = time.monotonic()

    def lap(step: str) -> None:
        nonlocal started
        now = time.monotonic()
        seconds[step] = round(now - started, 3)
        started = now

    # boto3 clients take a few hundred ms to create, mostly in Python, and the DuckDB work before
    # their first use releases the GIL: they are created meanwhile, and waited for before use.
    pool = ThreadPoolExecutor(2, thread_name_prefix="stream-connect")
    try:
        s3_ready = pool.submit(landing_.connect)
        with open_warehouse(config) as wh:
            wh.setup()
            wh.run_sql("stream/state")
            home = wh.home_schema  # DuckDB's is main, whatever warehouse.schema says
            if records is None:
                s3_ready.result()  # the listing uses it
            files, marks, floors = _select_candidates(wh, landing_, settings.lookback, records)
            files, refused = _refuse_future(files)
            unread = landing_.warn_unread()
            lap("select")
            summary: dict[str, Any] = {"mode": mode, "files": len(files), "seconds": seconds}
            if refused:
                summary["refused"] = sorted(f.name for f in refused)
            if unread:
                summary["unread"] = unread
            if not files:
                commit(wh, batch=False, as_of="", run_id=run_id, watermarks=marks, floors=floors)
                log.info("%s: no new landing files", mode)
                return summary
            senders_ready = [
                pool.submit(lambda d=d: d.sender)
                for d in destinations
                if isinstance(d, BatchedStreamDestination)
            ]
            as_of = _batch_as_of(wh, files)
            # the daily run's retention cutoffs (pipeline.validate), counted from the same date
            _, cutoffs = cutoffs_as_of(wh, config, as_of)
            past = {t: c for t, c in cutoffs.items() if t in VALIDATED_TARGETS}
            # staged landing rows and records (plain emails): in the scratch folder, which
            # sweep_scratch empties of what a killed batch leaves
            folder = Path(tempfile.mkdtemp(prefix="stream-batch-", dir=config.scratch_root))
            try:
                s3_ready.result()
                staged, unreadable = _stage(landing_, files, folder)
                if unreadable:
                    for why in sorted(unreadable.values()):
                        log.error("left out of the batch, not streamed: %s", why)
                    summary["unreadable"] = sorted(unreadable)
                    left_out = {"elements"} & {f.source for f in files if f.name in unreadable}
                    files = [
                        f for f in files if f.name not in unreadable and f.source not in left_out
                    ]
                    summary["files"] = len(files)
                    if not files:
                        commit(
                            wh,
                            batch=False,
                            as_of="",
                            run_id=run_id,
                            watermarks=marks,
                            floors=floors,
                        )
                        return summary
                    # from the files that go out: a file left out must not set the batch's date
                    as_of = _batch_as_of(wh, files)
                    _, cutoffs = cutoffs_as_of(wh, config, as_of)
                    past = {t: c for t, c in cutoffs.items() if t in VALIDATED_TARGETS}
                lap("stage")
                summary["sources"] = _validate(
                    wh, staged, files, as_of, home, load_rules(config.identity_config), past
                )
                lap("validate")
                has_elements = any(f.source == "elements" for f in files)
                wh.run_sql(
                    "stream/merge", bs=wh.scratch_schema(BATCH_SCHEMA), elements=has_elements
                )
                summary.update(_resolve(wh, config, home, cutoffs.get("interactions_days")))
                lap("resolve")
                for ready in senders_ready:
                    ready.result()
                summary["delivered"] = _emit(wh, destinations, folder, as_of, run_id)
                lap("emit")
                commit(wh, batch=True, as_of=as_of, run_id=run_id, watermarks=marks, floors=floors)
                wh.execute_script(
                    f"DROP SCHEMA IF EXISTS {wh.scratch_schema(BATCH_SCHEMA)} CASCADE;"
                    f" DROP SCHEMA IF EXISTS {wh.scratch_schema(WORK_SCHEMA)} CASCADE"
                )
                lap("commit")
            finally:
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        # A batch with nothing new never needed the clients: do not wait for them.
        pool.shutdown(wait=False, cancel_futures=True)
    log.info("stream batch (%s): %s", mode, summary)
    return summary
