"""Deferrable triggers: waits that run on the triggerer instead of holding a worker slot."""
