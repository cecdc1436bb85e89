"""Parses a PostgreSQL connection string with libpq itself (no server needed): proves psycopg2's
C extension and the bundled libpq load."""

import psycopg2
import psycopg2.extensions
from shared import envelope


def handler(event, context):
    dsn = psycopg2.extensions.parse_dsn(event["dsn"])
    dsn.pop("password", None)
    return envelope({"psycopg2": psycopg2.__version__.split()[0], "libpq": psycopg2.__libpq_version__, "dsn": dsn})
