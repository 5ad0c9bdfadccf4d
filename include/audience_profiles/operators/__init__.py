"""Airflow operators of the pipeline, for the steps a TaskFlow task cannot express (deferral)."""
