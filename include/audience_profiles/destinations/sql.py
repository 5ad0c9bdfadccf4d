"""Kind ``sql``: its code is generic_sql (destination_for imports the module that registers a kind,
config.module_of); this name is kept for code that imports ``destinations.sql``."""

from audience_profiles.destinations.generic_sql import GenericSqlDestination

__all__ = ["GenericSqlDestination"]
