"""``local``: timed drops of CSV / JSON / Parquet files into a folder on this machine.

pipeline.yml::

    - name: local_drop
      kind: local
      path: data/output            # relative to the project root
      formats: [csv, json]
      tables: [audience_profiles, audience_profile_interactions]
"""

from __future__ import annotations

from audience_profiles.config import DEFAULT_DROP_PATH, check_drop_places, resolve_path
from audience_profiles.destinations.base import DeliveryReport, RunInfo, register
from audience_profiles.destinations.drop import DropDestination, LocalSink


@register("local")
class LocalDestination(DropDestination):
    # path here; max_file_mb, quicksight_manifest, keep_days: drop.deliver_drops
    OPTIONS = frozenset({"path", "max_file_mb", "quicksight_manifest", "keep_days"})

    def sink(self) -> LocalSink:
        # config.py resolves a configured path; the default is resolved the same way (project root).
        return LocalSink(self.config.options.get("path") or resolve_path(DEFAULT_DROP_PATH))

    def deliver(self, run: RunInfo, tables: dict[str, str]) -> DeliveryReport:
        # again, following links (not done when the file loads, in every task): two drops' folders
        # may be one through a link
        check_drop_places(self.pipeline.destinations, self.pipeline.source_file, True)
        return super().deliver(run, tables)
