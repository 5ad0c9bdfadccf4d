"""Destinations: one module per kind, all behind :class:`~.base.Destination`."""

from __future__ import annotations

import importlib

from audience_profiles.config import ConfigError, DestinationConfig, PipelineConfig
from audience_profiles.destinations.base import (
    DeliveryReport,
    Destination,
    RunInfo,
    registered_kinds,
)

__all__ = ["DeliveryReport", "Destination", "RunInfo", "destination_for"]


def destination_for(config: DestinationConfig, pipeline: PipelineConfig) -> Destination:
    """Instantiate the destination for one pipeline.yml entry (imports only the module it needs)."""
    try:
        importlib.import_module(f"{__name__}.{config.kind}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{config.kind}":
            raise
        raise ConfigError(
            f"{pipeline.source_file}: destination {config.name!r} has unknown kind {config.kind!r}"
        ) from exc
    return registered_kinds()[config.kind](config, pipeline)
