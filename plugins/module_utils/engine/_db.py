# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connections to the engine database (psycopg 3), transactions, locks and migrations."""

from __future__ import annotations

import contextlib
import os
import re
import traceback

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import (
    EngineConnectionError,
    SchemaVersionError,
)
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _schema

try:
    import psycopg
    from psycopg import sql as pgsql
    from psycopg.rows import dict_row
except ImportError:
    psycopg = None
    pgsql = None
    dict_row = None
    PSYCOPG_IMPORT_ERROR = traceback.format_exc()

    class DatabaseError(Exception):
        """Stands for psycopg.Error when psycopg is missing (nothing raises it then)."""
else:
    DatabaseError = psycopg.Error
    PSYCOPG_IMPORT_ERROR = None

DEFAULT_PASSWORD_FILE = "/etc/virtplane/engine-db/password"

ENGINE_DEFAULTS = {
    "host": "localhost",
    "port": 5432,
    "database": "virtplane",
    "user": "virtplane",
    "password": None,
    "password_file": DEFAULT_PASSWORD_FILE,
    "sslmode": "prefer",
    "connect_timeout": 10,
}

# Advisory lock namespaces (first argument of the two-key pg_advisory_xact_lock).
LOCK_SCHEMA = 7301
LOCK_CLUSTER = 7302
LOCK_DATACENTER = 7303


def resolve_engine_options(options):
    """Fill unset engine options from their defaults; read the password file if needed."""
    resolved = dict(ENGINE_DEFAULTS)
    resolved.update({k: v for k, v in (options or {}).items() if v is not None})
    if not resolved.get("password") and resolved.get("password_file"):
        path = resolved["password_file"]
        if os.path.exists(path):
            try:
                with open(path) as handle:
                    resolved["password"] = handle.read().strip()
            except OSError as exc:
                raise EngineConnectionError(
                    "Cannot read the engine database password file %s: %s" % (path, exc.strerror))
    return resolved


def describe(options):
    where = options["host"] if options["host"].startswith("/") else "%s:%s" % (options["host"], options["port"])
    return "the engine database '%s' as '%s' at %s" % (options["database"], options["user"], where)


def _libpq_cause(exc):
    """The useful part of a libpq connection error, on one line."""
    text = str(exc).strip()
    match = re.search(r"FATAL:\s*(.+)", text)
    if match:
        return match.group(1).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else text
    first = re.sub(r"^connection failed:\s*", "", first)
    first = re.sub(r'^connection to server (at|on) .*? failed:\s*', "", first)
    if "Connection refused" in first or "No such file or directory" in first:
        return "%s (is PostgreSQL running and listening there?)" % first
    return first


def describe_error(exc):
    """A psycopg error on one line, with PostgreSQL's detail when it has one."""
    diag = getattr(exc, "diag", None)
    primary = (diag.message_primary if diag is not None else None) or str(exc).strip().splitlines()[0]
    detail = diag.message_detail if diag is not None else None
    return "%s (%s)" % (primary, detail) if detail else primary


def connect_raw(options):
    """Open an autocommit connection; transactions are explicit (Engine.transaction)."""
    if psycopg is None:
        raise EngineConnectionError("The Python library psycopg (version 3) is not installed")
    kwargs = dict(host=options["host"], port=options["port"], dbname=options["database"],
                  user=options["user"], connect_timeout=options["connect_timeout"],
                  application_name="virtplane.kvm", autocommit=True, row_factory=dict_row)
    if options.get("password"):
        kwargs["password"] = options["password"]
    if not options["host"].startswith("/"):
        kwargs["sslmode"] = options["sslmode"]
    try:
        return psycopg.connect(**kwargs)
    except psycopg.Error as exc:
        raise EngineConnectionError("Cannot connect to %s: %s" % (describe(options), _libpq_cause(exc)))


class Engine:
    """An open engine database with the expected schema."""

    def __init__(self, conn, options=None):
        self.conn = conn
        self.options = options or {}

    def close(self):
        self.conn.close()

    @contextlib.contextmanager
    def transaction(self):
        """One transaction; everything inside commits together or not at all."""
        with self.conn.transaction():
            with self.conn.cursor() as cur:
                yield cur

    @staticmethod
    def lock(cur, namespace, object_id):
        """Serialize writers of one object until the transaction ends."""
        cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s::text))", (namespace, str(object_id)))


def connect(options, require_schema=True):
    """Open the engine database named by the module's ``engine`` option."""
    resolved = resolve_engine_options(options)
    conn = connect_raw(resolved)
    engine = Engine(conn, resolved)
    if require_schema:
        try:
            check_schema(conn)
        except SchemaVersionError:
            conn.close()
            raise
    return engine


def schema_version(conn):
    """The applied schema version; 0 for a database without the engine schema."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('schema_migration') IS NOT NULL AS present")
        if not cur.fetchone()["present"]:
            return 0
        cur.execute("SELECT coalesce(max(version), 0) AS version FROM schema_migration")
        return cur.fetchone()["version"]


def check_schema(conn):
    version = schema_version(conn)
    if version == _schema.LATEST_VERSION:
        return version
    if version == 0:
        raise SchemaVersionError(
            "The engine database has no virtplane schema: deploy it with the virtplane.kvm.engine role")
    if version < _schema.LATEST_VERSION:
        raise SchemaVersionError(
            "The engine database schema is version %d, this collection needs version %d: "
            "upgrade it with the virtplane.kvm.engine role" % (version, _schema.LATEST_VERSION))
    raise_if_newer(version)
    return version


def raise_if_newer(version):
    if version > _schema.LATEST_VERSION:
        raise SchemaVersionError(
            "The engine database schema is version %d, newer than the version %d this collection "
            "knows: use a virtplane.kvm collection at least as new as the one that upgraded it"
            % (version, _schema.LATEST_VERSION))


def pending_migrations(current, target=None):
    """(target, ["N: description", ...]) of the migrations that take ``current`` to ``target``."""
    target = _schema.LATEST_VERSION if target is None else target
    if not 0 <= target <= _schema.LATEST_VERSION:
        raise SchemaVersionError("Schema version %d does not exist; the latest is %d"
                                 % (target, _schema.LATEST_VERSION))
    if current > target:
        raise SchemaVersionError("The engine database schema is version %d; downgrading to %d is "
                                 "not supported" % (current, target))
    return target, ["%d: %s" % (m.version, m.description) for m in _schema.MIGRATIONS[current:target]]


def migrate(conn, target=None, check_mode=False, owner=None):
    """Bring the schema to ``target`` (default: the latest) one migration at a time.

    Returns (from_version, to_version, [applied migration descriptions]).  ``owner`` is the
    role that should own what is created, when the caller connects as a superuser.
    """
    current = schema_version(conn)
    raise_if_newer(current)
    target, planned = pending_migrations(current, target)
    if check_mode or not planned:
        return current, target, planned
    applied = []
    for migration in _schema.MIGRATIONS[current:target]:
        with conn.transaction():
            with conn.cursor() as cur:
                if owner:
                    cur.execute(pgsql.SQL("SET LOCAL ROLE {}").format(pgsql.Identifier(owner)))
                cur.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_SCHEMA,))
                cur.execute(_schema.BOOKKEEPING)
                cur.execute("SELECT 1 FROM schema_migration WHERE version = %s", (migration.version,))
                if cur.fetchone():
                    continue  # a concurrent run applied it while we waited for the lock
                cur.execute(migration.sql)
                cur.execute("INSERT INTO schema_migration (version, description) VALUES (%s, %s)",
                            (migration.version, migration.description))
        applied.append("%d: %s" % (migration.version, migration.description))
    return current, target, applied
