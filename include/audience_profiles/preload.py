"""What the stream task imports, imported once in the scheduler so its task processes start warm.

LocalExecutor forks its workers from the scheduler when the executor starts, and every task
process is forked from a worker (``airflow/executors/local_executor.py``,
``airflow/sdk/execution_time/supervisor.py``). Whatever the scheduler imported before is already
in memory in each task; whatever it did not, each task imports again: about 1.5 s on an idle
2-CPU box for the task runner's parse step, DuckDB, pyarrow, boto3 and the amazon provider's
hooks, on every micro-batch. The plugin ``plugins/stream_preload.py`` calls :func:`preload`.

Only imports: no client, connection or file is opened here, so nothing unsafe crosses a fork.
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
    # one micro-batch (stream.run_batch) and its destinations
    "audience_profiles.stream",
    "audience_profiles.destinations.kinesis",
    "audience_profiles.destinations.firehose",
    "audience_profiles.destinations.kafka",
    "airflow.providers.amazon.aws.hooks.s3",
)


def preload(modules: tuple[str, ...] = STREAM_TASK_MODULES) -> float:
    """Import ``modules``; returns the seconds it took. A module that fails is logged, not raised:
    a task would import it again and fail there, with its own error."""
    started = time.monotonic()
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:
            log.exception("preloading %s failed", name)
    seconds = time.monotonic() - started
    log.info("preloaded the stream task's imports in %.2fs", seconds)
    return seconds
