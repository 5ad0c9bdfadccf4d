"""The destination interface: one small contract that every destination implements.

A destination never knows how profiles are built. The build exports each output table of a run
as one Parquet file (its snapshot as of the run's logical date); ``deliver`` receives those paths
and moves the data wherever it goes. Adding a destination is one module in this package that
subclasses :class:`Destination` under ``@register("<kind>")`` and declares the pipeline.yml keys
it reads in ``OPTIONS``, plus one entry in pipeline.yml.

Options: the keys every entry takes (``name``, ``kind``, ``tables``, ``conn_id``, ``formats``,
``compression``, ``pii``, ``csv_injection_escape``, ``enabled``) are read by config.py; every
other key of an entry lands in ``DestinationConfig.options``. A kind lists each option it (or a
shared helper it calls) reads in its class attribute ``OPTIONS = frozenset({...})``, written as a
literal: config.py reads it from the source when the file loads (without importing the module),
and :func:`~audience_profiles.destinations.destination_for` checks it again, so a key the kind
does not read (``pi: hashed``) fails with the file, the destination and the closest valid key
instead of being ignored; one it needs and lacks (``REQUIRED_OPTIONS``) fails likewise.
``formats``, ``compression`` and ``csv_injection_escape`` other than their defaults are refused
the same way by a kind that writes no files (``WRITES_FILES``).

A kind that drops files (a new object store) subclasses ``drop.DropDestination`` and gives
its ``sink()`` (put, get, list, delete, url), ``OPTIONS``, and ``prefix()`` if it takes a
``prefix`` option (as s3.py: the default writes at the sink's root): layout, write order,
retention and erasure are the drops'.

``WRITES_FILES``, ``NEEDS_CONN_ID``, ``STREAMED`` and ``LOADS_TABLES`` are read from the source too (the class's
own value, or one inherited from a class in this package); the module may have any name (``sql``
is registered in generic_sql.py): ``config.module_of`` finds it.

Contract every implementation keeps:
- idempotent: delivering the same run twice leaves the target as after one delivery (overwrite the
  partition, MERGE on a key, or stable record ids for streams);
- apply ``config.pii`` to every table it sends (config.py accepts the key for every kind and
  nothing checks that a kind reads it): ``drop.render_parts`` / ``drop.select_list`` render an
  export under the policy, ``streams.apply_pii`` a row;
- deliver exactly ``config.tables`` (``tables`` holds every export of the run);
- raise on failure after the retries that make sense inside one attempt; Airflow retries the task;
- report what was delivered in a :class:`DeliveryReport` (small: it goes through XCom).

Erasure: ``erase`` removes people from what the destination already holds, for the erasure DAG
(docs/privacy.md). A kind that cannot erase keeps the default, which answers ``not_supported``
for every request. That answer is final: once every destination has given a final one the
request is done and its identifiers are purged, so the person can never be erased there later.
A kind that sends personal data somewhere it could remove it from implements ``erase``; one that
cannot goes into test_options.CANNOT_ERASE, on purpose.

Tests: tests/destinations/test_options.py and tests/test_config.py cover every registered kind
(its module docstring's ``pipeline.yml::`` example must load); a module other than the kind's
own that reads its options goes into test_options.READERS.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from audience_profiles.config import DestinationConfig, PipelineConfig


@dataclass(frozen=True)
class RunInfo:
    """What a destination needs to know about the run it delivers."""

    ds: str  # logical date, YYYY-MM-DD: the partition every write is keyed by
    run_id: str


@dataclass
class DeliveryReport:
    destination: str
    kind: str
    rows: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Erasure statuses. A request is complete once every destination answered a final one.
ERASED = "done"
NOT_SUPPORTED = "not_supported"
SKIPPED = "skipped"  # nothing to do here (a suppress-only request, a dry-run destination)
FAILED = "failed"  # tried again by the next erasure run
FINAL_STATUSES = frozenset({ERASED, NOT_SUPPORTED, SKIPPED})


@dataclass(frozen=True)
class ErasureRequest:
    """One person to remove: the profiles an erasure request resolved to, and every identifier.

    ``identifiers`` are (identifier_type, value) pairs as the warehouse holds them: emails
    normalised, session and external ids as landed. Personal data: never log or report them.
    """

    request_id: str
    requested_at: str
    profile_ids: tuple[str, ...] = ()
    identifiers: tuple[tuple[str, str], ...] = ()

    def values(self, identifier_type: str) -> set[str]:
        return {value for kind, value in self.identifiers if kind == identifier_type}


def erasure_status(status: str, detail: str = "") -> dict[str, str]:
    """What ``erase`` answers per request (small: it goes through XCom; no personal data)."""
    return {"status": status, "detail": detail}


class Destination(abc.ABC):
    kind: ClassVar[str]
    # The kind-specific pipeline.yml keys this kind reads (see the module docstring). Declare it on
    # the registered class itself, as a literal frozenset: the default accepts no option at all.
    OPTIONS: ClassVar[frozenset[str]] = frozenset()
    # Those of ``OPTIONS`` it cannot work without (a bucket, a topic), the same way: a missing or
    # empty one fails when pipeline.yml loads, not at delivery after the whole build.
    REQUIRED_OPTIONS: ClassVar[frozenset[str]] = frozenset()
    # Those of ``schema`` and ``database`` it writes unquoted into its SQL, the same way: the load
    # then refuses anything but a plain name (letters, digits, underscores).
    PLAIN_NAME_OPTIONS: ClassVar[frozenset[str]] = frozenset()
    # Whether it writes files, so that formats, compression and csv_injection_escape (read by
    # config.py for every kind) mean something to it: set on those that do (the drops).
    WRITES_FILES: ClassVar[bool] = False
    # Whether it cannot work without ``conn_id`` (no default connection makes sense): checked
    # when pipeline.yml loads.
    NEEDS_CONN_ID: ClassVar[bool] = False
    # Whether the stream DAG (stream.py) sends its micro-batches to it, record by record, besides
    # the daily delivery: set on the streams (Kinesis, Firehose, Kafka).
    STREAMED: ClassVar[bool] = False
    # Whether it loads the exports into tables of a schema it reaches through ``conn_id``
    # (``database`` and ``schema`` options): set on the SQL warehouses, so that two of them
    # loading one table into one schema are refused when pipeline.yml loads.
    LOADS_TABLES: ClassVar[bool] = False

    def __init__(self, config: DestinationConfig, pipeline: PipelineConfig):
        self.config = config
        self.pipeline = pipeline

    @property
    def name(self) -> str:
        return self.config.name

    def report(self) -> DeliveryReport:
        return DeliveryReport(destination=self.config.name, kind=self.kind)

    @abc.abstractmethod
    def deliver(self, run: RunInfo, tables: dict[str, str]) -> DeliveryReport:
        """Deliver ``tables`` (output table name -> path of its Parquet export) for ``run``."""

    def erase(self, requests: Sequence[ErasureRequest]) -> dict[str, dict[str, str]]:
        """Remove these people from what was delivered; ``{request_id: erasure_status(...)}``.

        Requests come in a batch so a destination can make one pass over what it holds. It must
        be idempotent (a failed request comes again in the next run) and raise on failure.
        """
        return {
            r.request_id: erasure_status(NOT_SUPPORTED, f"{self.kind} destinations cannot erase")
            for r in requests
        }


_REGISTRY: dict[str, type[Destination]] = {}


def register(kind: str):
    def decorator(cls: type[Destination]) -> type[Destination]:
        cls.kind = kind
        _REGISTRY[kind] = cls
        return cls

    return decorator


def registered_kinds() -> dict[str, type[Destination]]:
    return dict(_REGISTRY)
