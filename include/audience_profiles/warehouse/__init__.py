"""Pick the warehouse engine from configuration (never from ``if`` branches in tasks)."""

from __future__ import annotations

from audience_profiles.config import PipelineConfig
from audience_profiles.warehouse.base import Warehouse


def open_warehouse(config: PipelineConfig) -> Warehouse:
    if config.warehouse.engine == "duckdb":
        from audience_profiles.warehouse.duckdb import DuckDBWarehouse

        return DuckDBWarehouse(config.warehouse)
    from audience_profiles.warehouse.snowflake import SnowflakeWarehouse

    return SnowflakeWarehouse(config.warehouse)
