"""Airflow hooks for services the providers do not cover, built on the providers' own hooks."""
