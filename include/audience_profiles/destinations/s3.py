"""``s3``: timed drops of CSV / JSON / Parquet files into an S3 bucket (see drop.py for the layout).

pipeline.yml::

    - name: s3_drop
      kind: s3
      conn_id: aws_default          # Airflow AWS connection; its extra endpoint_url may point elsewhere
      bucket: my-audience-bucket
      prefix: audience-profiles     # optional
      formats: [csv, parquet]
      compression: gzip             # optional
      max_file_mb: 256              # optional
      quicksight_manifest: true     # optional
      tables: [audience_profiles]
"""

from __future__ import annotations

from pathlib import Path

from airflow.providers.amazon.aws.hooks.s3 import S3Hook

from audience_profiles.destinations.base import register
from audience_profiles.destinations.drop import DropDestination


class S3Sink:
    """Drop files as objects of one bucket, through the amazon provider's S3Hook."""

    def __init__(self, hook: S3Hook, bucket: str):
        self.hook = hook
        self.bucket = bucket

    def put(self, local_path: Path, key: str) -> None:
        # One PUT (multipart above the transfer threshold): readers see the old object or the new.
        self.hook.load_file(local_path, key, bucket_name=self.bucket, replace=True)

    def get(self, key: str, local_path: Path) -> None:
        self.hook.get_key(key, self.bucket).download_file(str(local_path))

    def list(self, prefix: str) -> list[str]:
        return self.hook.list_keys(bucket_name=self.bucket, prefix=prefix)

    def delete(self, keys: list[str]) -> None:
        if keys:
            self.hook.delete_objects(self.bucket, keys)

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


@register("s3")
class S3Destination(DropDestination):
    # bucket and prefix here; max_file_mb, quicksight_manifest, keep_days: drop.deliver_drops
    OPTIONS = frozenset({"bucket", "prefix", "max_file_mb", "quicksight_manifest", "keep_days"})
    REQUIRED_OPTIONS = frozenset({"bucket"})

    def sink(self) -> S3Sink:
        # conn_id None leaves boto3 to its default credential chain (instance or pod role).
        return S3Sink(S3Hook(aws_conn_id=self.config.conn_id), str(self.config.options["bucket"]))

    def prefix(self) -> str:
        return str(self.config.options.get("prefix", ""))
