"""``local``: timed drops of CSV / JSON / Parquet files into a folder on this machine.

pipeline.yml::

    - name: local_drop
      kind: local
      path: data/output            # relative to the project root
      formats: [csv, json]
      tables: [audience_profiles, audience_profile_interactions]
"""

from __future__ import annotations

from audience_profiles.destinations.base import DeliveryReport, Destination, RunInfo, register
from audience_profiles.destinations.drop import LocalSink, deliver_drops


@register("local")
class LocalDestination(Destination):
    def deliver(self, run: RunInfo, tables: dict[str, str]) -> DeliveryReport:
        sink = LocalSink(self.config.options.get("path", "data/output"))
        return deliver_drops(self, sink, "", run, tables)
