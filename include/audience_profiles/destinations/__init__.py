"""Destinations: one module per kind, all behind :class:`~.base.Destination`."""

from __future__ import annotations

import dataclasses
import importlib

from audience_profiles.config import (
    ConfigError,
    DestinationConfig,
    PipelineConfig,
    check_destination_options,
    check_required_options,
    module_of,
    refuse_file_keys,
)
from audience_profiles.destinations.base import (
    DeliveryReport,
    Destination,
    RunInfo,
    registered_kinds,
)

__all__ = ["DeliveryReport", "Destination", "RunInfo", "destination_for"]


def destination_for(config: DestinationConfig, pipeline: PipelineConfig) -> Destination:
    """Instantiate the destination for one pipeline.yml entry (imports only the module it needs:
    the one registering the kind, found in the source as config.py finds its ``OPTIONS``).

    An option the kind does not declare in ``OPTIONS`` is a ConfigError naming the file, the
    destination, the key and the closest valid key (config.py checks the same when it loads).
    """
    module = module_of(config.kind)
    if module is not None:
        importlib.import_module(f"{__name__}.{module}")
    cls = registered_kinds().get(config.kind)
    if cls is None:
        raise ConfigError(
            f"{pipeline.source_file}: destination {config.name!r} has unknown kind {config.kind!r}"
        )
    names = [d.name for d in pipeline.destinations]
    where = f"destinations[{names.index(config.name)}]." if config.name in names else ""
    check_destination_options(config, cls.OPTIONS, pipeline.source_file, where)
    check_required_options(config, cls.REQUIRED_OPTIONS, pipeline.source_file, where)
    if not cls.WRITES_FILES:
        # Read for every kind by config.py: set on one that writes no files, they were ignored
        # (a Kinesis entry with formats: [parquet] sent JSON records, and said nothing).
        # The config has no record of which keys were written: the ones off their defaults.
        defaults = {f.name: f.default for f in dataclasses.fields(DestinationConfig)}
        off_default = [
            key
            for key in ("formats", "compression", "csv_injection_escape")
            if getattr(config, key) != defaults[key]
        ]
        refuse_file_keys(config, off_default, pipeline.source_file, where)
    return cls(config, pipeline)
