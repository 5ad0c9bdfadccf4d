"""What the stream task imports, imported once in the scheduler so its task processes start warm.

LocalExecutor forks its workers from the scheduler when the executor starts, and every task
process is forked from a worker (``airflow/executors/local_executor.py``,
``airflow/sdk/execution_time/supervisor.py``). Whatever the scheduler imported before is already
in memory in each task; whatever it did not, each task imports again: about 1.5 s on an idle
2-CPU box for the task runner's parse step, DuckDB, pyarrow, boto3 and the amazon provider's
hooks, on every micro-batch. The plugin ``plugins/stream_preload.py`` calls :func:`preload`.

Besides imports, botocore's first client in a process does one-time work the later ones skip:
a throwaway client per service the task uses, created here, halves the first S3 client's
creation in every task process (0.55 s -> 0.25 s, measured forking a preloaded process on the
shared box). Those clients get explicit dummy credentials and a region (no credential lookup,
no network) and are dropped at once: no connection, socket or file crosses the fork.
"""

from __future__ import annotations

import importlib
import logging
import time

log = logging.getLogger(__name__)

STREAM_TASK_MODULES = (
    # the task runner and how it parses the DAG file
    "airflow.sdk.execution_time.supervisor",
    "airflow.sdk.execution_time.task_runner",
    "airflow.dag_processing.dagbag",
    "audience_profiles.dag_defaults",
    # one micro-batch (stream.run_batch); its destinations' modules are added by preload()
    "audience_profiles.stream",
    "airflow.providers.amazon.aws.hooks.s3",
)


# The services a micro-batch calls: the S3 landing and the stream destinations.
AWS_SERVICES = ("s3", "kinesis", "firehose")


def stream_destination_modules() -> tuple[str, ...]:
    """The modules of the kinds the stream DAG sends to (``STREAMED``)."""
    from audience_profiles.config import module_of, stream_kinds

    return tuple(f"audience_profiles.destinations.{module_of(kind)}" for kind in stream_kinds())


def preload(
    modules: tuple[str, ...] | None = None, services: tuple[str, ...] = AWS_SERVICES
) -> float:
    """Import ``modules`` (the stream task's: :data:`STREAM_TASK_MODULES` and its destinations')
    and create a throwaway client per AWS service; returns the seconds it took. Nothing fails
    here: a task would meet the same error and report it."""
    started = time.monotonic()
    if modules is None:
        modules = STREAM_TASK_MODULES + stream_destination_modules()
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:
            log.exception("preloading %s failed", name)
    try:
        import boto3

        session = boto3.session.Session(
            aws_access_key_id="preload", aws_secret_access_key="preload", region_name="us-east-1"
        )
        for service in services:
            session.client(service)
    except Exception:
        log.exception("preloading the AWS clients failed")
    seconds = time.monotonic() - started
    log.info("preloaded the stream task's imports in %.2fs", seconds)
    return seconds
