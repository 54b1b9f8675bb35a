"""Alembic environment of vecstore, installed as ``vecstore.migrations``."""
