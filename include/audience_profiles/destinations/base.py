"""The destination interface: one small contract that every destination implements.

A destination never knows how profiles are built. The build exports each output table of a run
as one Parquet file (its snapshot as of the run's logical date); ``deliver`` receives those paths
and moves the data wherever it goes. Adding a destination is one module in this package that
subclasses :class:`Destination` under ``@register("<kind>")``, plus one entry in pipeline.yml.

Contract every implementation keeps:
- idempotent: delivering the same run twice leaves the target as after one delivery (overwrite the
  partition, MERGE on a key, or stable record ids for streams);
- raise on failure after the retries that make sense inside one attempt; Airflow retries the task;
- report what was delivered in a :class:`DeliveryReport` (small: it goes through XCom).
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from audience_profiles.config import DestinationConfig, PipelineConfig


@dataclass(frozen=True)
class RunInfo:
    """What a destination needs to know about the run it delivers."""

    ds: str  # logical date, YYYY-MM-DD: the partition every write is keyed by
    run_id: str
    data_interval_start: str = ""
    data_interval_end: str = ""


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


class Destination(abc.ABC):
    kind: ClassVar[str]

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


_REGISTRY: dict[str, type[Destination]] = {}


def register(kind: str):
    def decorator(cls: type[Destination]) -> type[Destination]:
        cls.kind = kind
        _REGISTRY[kind] = cls
        return cls

    return decorator


def registered_kinds() -> dict[str, type[Destination]]:
    return dict(_REGISTRY)
