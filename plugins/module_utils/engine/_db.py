# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connections to the engine database (psycopg 3), transactions, locks and migrations."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import posixpath
import re
import stat
import traceback

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import (
    EngineConnectionError,
    SchemaVersionError,
    ValidationError,
)
from ansible_collections.virtplane.kvm.plugins.module_utils._validation import shown
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


def jsonb(value):
    """``value`` as a jsonb parameter (psycopg imported here: its absence is reported once, above)."""
    from psycopg.types.json import Jsonb

    return Jsonb(value)


DEFAULT_PASSWORD_FILE = "/etc/virtplane/engine-db/password"

ENGINE_DEFAULTS = {
    "host": "localhost",
    "port": 5432,
    "database": "virtplane",
    "user": "virtplane",
    "password": None,
    "password_file": DEFAULT_PASSWORD_FILE,
    "sslmode": "prefer",
    "sslrootcert": None,
    "connect_timeout": 10,
}

# Advisory lock namespaces (first argument of the two-key pg_advisory_xact_lock).
LOCK_SCHEMA = 7301
LOCK_CLUSTER = 7302
LOCK_DATACENTER = 7303
# one monitor pass at a time (a session lock, held for the pass: the service's and the reconcile module's)
LOCK_MONITOR = 7304


_IDENTIFIER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.$-]{0,62}")
_SERVER = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.:-]{0,251}[A-Za-z0-9])?")


ENGINE_FIELDS = {key: "engine." + key for key in ENGINE_DEFAULTS}


def validate_engine_options(options, fields=None):
    """The connection options, refused with the field named before anything is attempted.

    ``fields`` names them as the module calls them (``engine.port``, or ``login_port`` ...).
    """
    fields = dict(ENGINE_FIELDS, **(fields or {}))
    for key in ("database", "user"):
        if not isinstance(options[key], str) or not _IDENTIFIER.fullmatch(options[key]):
            raise ValidationError(fields[key], "%s is not a PostgreSQL name (letters, digits, '_', '.', '$' "
                                               "or '-', 63 at most)" % shown(options[key]))
    host = options["host"]
    if not isinstance(host, str) or not (_is_address(host) or _SERVER.fullmatch(host) or (
            host.startswith("/") and posixpath.normpath(host) == host and not _CONTROL.search(host))):
        raise ValidationError(fields["host"], "%s is neither a host name, an IP address nor the absolute path of "
                                              "PostgreSQL's socket directory" % shown(host))
    root = options.get("sslrootcert")
    if root is not None and not (isinstance(root, str) and root.startswith("/") and posixpath.normpath(root) == root
                                 and not _CONTROL.search(root)):
        raise ValidationError(fields["sslrootcert"], "%s is not an absolute path (the CA certificate that signed "
                                                     "the server's)" % shown(root))
    for key, low, high in (("port", 1, 65535), ("connect_timeout", 1, 300)):
        value = options[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValidationError(fields[key], "%s is outside %d-%d" % (shown(value), low, high))


def _is_address(host):
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def resolve_engine_options(options, fields=None):
    """Fill unset engine options from their defaults; read the password file if needed."""
    resolved = dict(ENGINE_DEFAULTS)
    resolved.update({k: v for k, v in (options or {}).items() if v is not None})
    validate_engine_options(resolved, fields)
    if not resolved.get("password") and resolved.get("password_file"):
        path = resolved["password_file"]
        if os.path.lexists(path):
            resolved["password"] = read_secret_file(dict(ENGINE_FIELDS, **(fields or {}))["password_file"], path)
    return resolved


SECRET_FILE_MAX = 4096


def read_secret_file(field, path):
    """The one line of text a password file holds: a regular file, read to a bound, decoded strictly.

    A FIFO would block, /dev/zero would never end, a binary file would not decode: each is refused
    with the field named, and the file's content is never part of a message.
    """
    if not isinstance(path, str) or not path.startswith("/") or _CONTROL.search(path):
        raise ValidationError(field, "%s is not an absolute path" % shown(path))
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise ValidationError(field, "cannot read %s: %s" % (shown(path), exc.strerror))
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise ValidationError(field, "%s is not a regular file" % shown(path))
        data = os.read(descriptor, SECRET_FILE_MAX + 1)
    except OSError as exc:
        raise ValidationError(field, "cannot read %s: %s" % (shown(path), exc.strerror))
    finally:
        os.close(descriptor)
    if len(data) > SECRET_FILE_MAX:
        raise ValidationError(field, "%s is longer than a password file (%d bytes at most)"
                              % (shown(path), SECRET_FILE_MAX))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError(field, "%s does not hold text (UTF-8)" % shown(path))
    secret = text.strip()
    if _CONTROL.search(secret):
        raise ValidationError(field, "%s holds more than one line, or control characters" % shown(path))
    return secret


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


# Option names of the modules, where a column is called otherwise.
_FIELD_OF_COLUMN = {"vlan_id": "vlan", "vxlan_vni": "vxlan", "size_bytes": "size", "scheduling_params":
                    "scheduling_policy_params"}


def _field(diag):
    """The module option behind a refused column: from the error, or from the constraint's name."""
    column = diag.column_name
    if not column and diag.constraint_name and diag.table_name:
        name = diag.constraint_name
        prefix, suffix = diag.table_name + "_", "_check"
        if name.startswith(prefix) and name.endswith(suffix) and len(name) > len(prefix) + len(suffix):
            column = name[len(prefix):-len(suffix)]
    if not column and diag.datatype_name == "object_name":
        return "name"
    return _FIELD_OF_COLUMN.get(column, column)


def _key_columns(detail):
    """'Key (a, b)=(...) already exists.' -> 'a, b': which columns, never their values."""
    match = re.match(r"Key \(([^)]*)\)=", detail or "")
    return match.group(1) if match else None


def describe_error(exc):
    """A psycopg error on one line: which field and why, never the row's contents.

    PostgreSQL's DETAIL of a check or not-null violation is the whole failing row (URIs and all),
    and some messages quote the refused value; neither reaches a user.
    """
    diag = getattr(exc, "diag", None)
    text = str(exc).strip()
    primary = ((diag.message_primary if diag is not None else None) or (text.splitlines() or [""])[0]).strip()
    primary = primary.splitlines()[0] if primary else "unknown error"
    state = getattr(exc, "sqlstate", None) or (diag.sqlstate if diag is not None else None)
    if diag is None or not state:
        return primary
    table = diag.table_name
    field = _field(diag)
    where = " of %s" % table.replace("_", " ") if table else ""
    if state == "23514":  # check_violation
        return "%s: the value is not accepted (constraint %s%s)" % (field or "a value", diag.constraint_name, where)
    if state == "23502":  # not_null_violation
        return "%s: a value is required%s" % (field or "a field", where)
    if state == "23505":  # unique_violation
        columns = _key_columns(diag.message_detail)
        return "a%s %s with the same %s exists already (a concurrent change?)" % (
            "n" if (table or "x")[0] in "aeiou" else "", (table or "row").replace("_", " "), columns or "key")
    if state == "23503":  # foreign_key_violation
        return "%s refers to an object that does not exist or is still in use (a concurrent change?)" % (
            (table or "a row").replace("_", " "))
    if state in ("22003", "22001"):  # numeric_value_out_of_range, string_data_right_truncation
        return "%s%s" % (primary, " (%s)" % field if field else "")
    if state.startswith("22"):
        # data exceptions quote the value ('invalid input syntax for type inet: "..."'): keep the kind only
        return primary.split(":", 1)[0]
    if state in ("40001", "40P01"):
        return "a concurrent change got in the way (%s); run again" % primary
    return primary


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
        if options.get("sslrootcert"):
            kwargs["sslrootcert"] = options["sslrootcert"]
    try:
        return psycopg.connect(**kwargs)
    except psycopg.Error as exc:
        raise EngineConnectionError("Cannot connect to %s: %s" % (describe(options), _libpq_cause(exc)))


# What the engine allows unless its installer decided otherwise (table engine_setting).
SETTING_DEFAULTS = {"allow_test_driver": False, "reservation_lease_seconds": 60}


class Engine:
    """An open engine database with the expected schema."""

    def __init__(self, conn, options=None, settings=None):
        self.conn = conn
        self.options = options or {}
        self.settings = dict(SETTING_DEFAULTS, **(settings or {}))
        # the hypervisor connections of this run (services set it up on first use; closed with the engine)
        self.hypervisors = None
        # the clusters' placement snapshots this connection keeps (services._placing), by cluster id
        self.placement_snapshots = {}
        self._locks = None  # the cursor locks are taken on (see lock)
        self._borrowed = False  # the hypervisor connections are another engine's (see sibling)

    @property
    def allow_test_driver(self):
        """Whether hosts may be libvirt's test driver (a setting for trials and tests)."""
        return self.settings["allow_test_driver"] is True

    @property
    def lease_seconds(self):
        """How long a reservation lives without a heartbeat before it counts as left by a dead run."""
        value = self.settings["reservation_lease_seconds"]
        return value if isinstance(value, int) and 1 <= value <= 3600 else 60

    @property
    def where(self):
        """Which database this is, for messages: 'the engine database 'x' as 'y' at host:port'."""
        return describe(self.options) if self.options.get("host") else "the engine database"

    def close(self):
        if self.hypervisors is not None and not self._borrowed:
            self.hypervisors.close()
        self.conn.close()

    def sibling(self):
        """Another connection to the same database with this one's settings, for a thread of this run (a
        psycopg connection serves one transaction at a time). It shares this engine's hypervisor connections
        (``services._hosts.sibling`` makes sure there are some), which it leaves open when it is closed."""
        other = Engine(connect_raw(self.options), self.options, self.settings)
        other.hypervisors, other._borrowed = self.hypervisors, self.hypervisors is not None
        return other

    @contextlib.contextmanager
    def transaction(self):
        """One transaction; everything inside commits together or not at all."""
        try:
            with self.conn.transaction():
                with self.conn.cursor() as cur:
                    yield cur
        except BaseException:
            # what a kept placement snapshot read in it may have seen of its own writes is gone with them
            self.placement_snapshots.clear()
            raise

    @contextlib.contextmanager
    def consistent_read(self):
        """One read-only transaction whose statements all see the same snapshot (REPEATABLE READ): for reads
        made in several statements outside any lock, that must agree with each other."""
        self.conn.isolation_level, self.conn.read_only = psycopg.IsolationLevel.REPEATABLE_READ, True
        try:
            with self.transaction() as cur:
                yield cur
        finally:
            self.conn.isolation_level, self.conn.read_only = None, None

    def lock(self, cur, namespace, object_id):
        """Serialize writers of one object until the transaction ends (``cur``: the transaction's cursor).

        On a cursor kept for locks alone, whose answers are never read: in pipeline mode, psycopg before 3.2
        answers a cursor's fetch with the first of its unread results, which would be the lock's; and a cursor
        closed in pipeline mode waits for its answers, which would cost the round trip the pipeline saves."""
        del cur
        if self._locks is None or self._locks.closed:
            self._locks = self.conn.cursor()
        self._locks.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s::text))", (namespace, str(object_id)))


def connect(options, require_schema=True):
    """Open the engine database named by the module's ``engine`` option."""
    resolved = resolve_engine_options(options)
    conn = connect_raw(resolved)
    engine = Engine(conn, resolved)
    if require_schema:
        try:
            check_schema(conn, describe(resolved))
            engine.settings.update(read_settings(conn))
        except SchemaVersionError:
            conn.close()
            raise
    return engine


def read_settings(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT name, value FROM engine_setting")
        return {r["name"]: r["value"] for r in cur.fetchall()}


def schema_version(conn):
    """The applied schema version; 0 for a database without the engine schema."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('schema_migration') IS NOT NULL AS present")
        if not cur.fetchone()["present"]:
            return 0
        cur.execute("SELECT coalesce(max(version), 0) AS version FROM schema_migration")
        return cur.fetchone()["version"]


def check_schema(conn, where="the engine database"):
    """The schema version, if it is the one this code knows; ``where`` names the database in errors."""
    version = schema_version(conn)
    if version == _schema.LATEST_VERSION:
        return version
    where = where[0].upper() + where[1:]
    if version == 0:
        raise SchemaVersionError(
            "%s has no virtplane schema: deploy it with the virtplane.kvm.engine role" % where)
    if version < _schema.LATEST_VERSION:
        raise SchemaVersionError(
            "%s has schema version %d, this collection needs version %d: "
            "upgrade it with the virtplane.kvm.engine role" % (where, version, _schema.LATEST_VERSION))
    raise_if_newer(version, where)
    return version


def raise_if_newer(version, where="the engine database"):
    if version > _schema.LATEST_VERSION:
        raise SchemaVersionError(
            "%s%s has schema version %d, newer than the version %d this collection "
            "knows: use a virtplane.kvm collection at least as new as the one that upgraded it"
            % (where[0].upper(), where[1:], version, _schema.LATEST_VERSION))


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
