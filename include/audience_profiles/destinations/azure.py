"""``azure``: timed drops of CSV / JSON / Parquet files into an Azure Blob Storage container.

The layout and write order are drop.py's. The container is created when it does not exist yet.

pipeline.yml::

    - name: azure_drop
      kind: azure
      conn_id: wasb_default         # Airflow wasb connection (connection string, key, SAS or identity)
      container: audience
      prefix: audience-profiles     # optional
      formats: [csv]
      tables: [audience_profiles]
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from airflow.providers.microsoft.azure.hooks.wasb import WasbHook

from audience_profiles.destinations.base import register
from audience_profiles.destinations.drop import DropDestination

# Blob batch requests take at most 256 sub-requests.
_DELETE_BATCH = 256


class AzureSink:
    """Drop files as block blobs of one container, through the microsoft-azure provider's WasbHook."""

    def __init__(self, hook: WasbHook, container: str):
        self.hook = hook
        self.container = container

    def put(self, local_path: Path, key: str) -> None:
        # Block blobs commit their block list at the end: readers see the old blob or the new.
        self.hook.load_file(str(local_path), self.container, key, overwrite=True)

    def get(self, key: str, local_path: Path) -> None:
        self.hook.get_file(str(local_path), self.container, key)

    def list(self, prefix: str) -> list[str]:
        return self.hook.get_blobs_list_recursive(self.container, prefix=prefix)

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), _DELETE_BATCH):
            self.hook.delete_blobs(self.container, *keys[start : start + _DELETE_BATCH])

    def url(self, key: str) -> str:
        # A connection whose sas_token is an account URL puts the token in every blob URL: a
        # read-write credential that must not reach manifests, the report or the task's XCom.
        url = self.hook.blob_service_client.get_blob_client(self.container, key).url
        return urlunsplit(urlsplit(url)._replace(query=""))


@register("azure")
class AzureDestination(DropDestination):
    # container and prefix here; max_file_mb, quicksight_manifest, keep_days: drop.deliver_drops
    OPTIONS = frozenset({"container", "prefix", "max_file_mb", "quicksight_manifest", "keep_days"})
    REQUIRED_OPTIONS = frozenset({"container"})

    def sink(self) -> AzureSink:
        hook = WasbHook(wasb_conn_id=self.config.conn_id or WasbHook.default_conn_name)
        container = str(self.config.options["container"])
        hook.create_container(container)  # no-op (logged) when it exists
        return AzureSink(hook, container)

    def prefix(self) -> str:
        return str(self.config.options.get("prefix", ""))
