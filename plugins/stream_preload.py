"""Airflow plugin: the scheduler imports the stream task's modules before LocalExecutor forks its
workers, so every micro-batch's task process starts with them in memory
(``audience_profiles.preload``; measured in ``bench/STREAM.md``).

A lifecycle listener: ``on_starting`` runs when a component's job is created, before the
scheduler starts its executor. Only the scheduler preloads (the job's type is not set yet at that
point, hence the command line); the other components and the task processes skip it.
"""

from __future__ import annotations

import sys

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin


class StreamPreloadListener:
    @hookimpl
    def on_starting(self, component) -> None:
        from airflow.jobs.job import Job

        if isinstance(component, Job) and sys.argv[1:2] == ["scheduler"]:
            from audience_profiles.preload import preload

            preload()


class StreamPreloadPlugin(AirflowPlugin):
    name = "audience_profiles_stream_preload"
    listeners = [StreamPreloadListener()]
