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
from audience_profiles.destinations.drop import LocalSink, write_partition


@register("local")
class LocalDestination(Destination):
    def deliver(self, run: RunInfo, tables: dict[str, str]) -> DeliveryReport:
        report = self.report()
        sink = LocalSink(self.config.options.get("path", "data/output"))
        for table in self.config.tables:
            result = write_partition(sink, "", table, tables[table], self.config, run)
            report.rows[table] = result.rows
            report.files.extend(sink.url(k) for k in result.files)
        return report
