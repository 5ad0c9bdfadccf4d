"""``local``: timed drops of CSV / JSON / Parquet files into a folder on this machine.

pipeline.yml::

    - name: local_drop
      kind: local
      path: data/output            # relative to the project root
      formats: [csv, json]
      tables: [audience_profiles, audience_profile_interactions]
"""

from __future__ import annotations

from audience_profiles.config import resolve_path
from audience_profiles.destinations.base import DeliveryReport, Destination, RunInfo, register
from audience_profiles.destinations.drop import LocalSink, deliver_drops


@register("local")
class LocalDestination(Destination):
    def deliver(self, run: RunInfo, tables: dict[str, str]) -> DeliveryReport:
        # config.py resolves a configured path; the default is resolved the same way (project root).
        sink = LocalSink(self.config.options.get("path") or resolve_path("data/output"))
        return deliver_drops(self, sink, "", run, tables)
