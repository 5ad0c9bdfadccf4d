# The Airflow image for audience-profiles: the official image at the pinned Airflow and Python
# versions, with the project's pinned requirements and its code. docker-compose.yml builds it and
# mounts dags/, include/ and plugins/ over the copies for development.
FROM apache/airflow:3.3.2-python3.11

# Exactly the versions the tests ran with (requirements.txt is compiled by uv from
# requirements.in and pins apache-airflow to this image's version, so pip keeps Airflow as is).
COPY --chown=airflow:root requirements.txt /opt/airflow/requirements.txt
RUN pip install --no-cache-dir -r /opt/airflow/requirements.txt

# The package lives in include/ (imported as audience_profiles); DAG files in dags/.
COPY --chown=airflow:root include /opt/airflow/include
COPY --chown=airflow:root dags /opt/airflow/dags
# The stream DAG's preload plugin warms LocalExecutor's task processes (docs/streams.md).
COPY --chown=airflow:root plugins /opt/airflow/plugins
# Compiled once here, not by every task process (about 0.6 s each otherwise).
RUN python -m compileall -q /opt/airflow/include /opt/airflow/dags /opt/airflow/plugins
ENV PYTHONPATH=/opt/airflow/include \
    AUDIENCE_PROFILES_CONFIG=/opt/airflow/include/config/pipeline.yml
