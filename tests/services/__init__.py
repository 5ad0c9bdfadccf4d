"""Real services for tests, started on loopback by pytest fixtures and stopped afterwards.

Each module here is loaded as a pytest plugin by tests/conftest.py. A fixture starts its service
once per session on a free 127.0.0.1 port; .ci/run only installs the programs.
"""
