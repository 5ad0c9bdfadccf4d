"""audience-profiles: merge fan-engagement data into Audience Profiles and deliver them."""

__version__ = "0.1.0"
