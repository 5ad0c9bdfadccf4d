"""Kind ``sql``: destination_for imports the module named like the kind; the code is generic_sql."""

from audience_profiles.destinations.generic_sql import GenericSqlDestination

__all__ = ["GenericSqlDestination"]
