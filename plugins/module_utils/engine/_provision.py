# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Create the engine's PostgreSQL role and database and bring its schema up to date.

Runs with a PostgreSQL superuser (the engine role connects as ``postgres`` over the local
socket).  The role's password is sent as a SCRAM-SHA-256 verifier computed here, so the
clear text never appears in a statement the server could log, and a re-run recognizes an
unchanged password by recomputing the verifier with the stored salt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import EngineConnectionError, ValidationError
from ansible_collections.virtplane.kvm.plugins.module_utils._validation import (
    shown,
    validate_name,
    validate_path,
)
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _db, _schema

SCRAM_ITERATIONS = 4096


def scram_verifier(password, salt=None, iterations=SCRAM_ITERATIONS):
    """The verifier PostgreSQL stores for ``password`` (RFC 5802/7677, as in pg_authid)."""
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return "SCRAM-SHA-256$%d:%s$%s:%s" % (iterations, _b64(salt), _b64(stored_key), _b64(server_key))


def _b64(raw):
    return base64.b64encode(raw).decode("ascii")


def password_matches(stored, password, user):
    """Whether ``stored`` (pg_authid.rolpassword) is the verifier of ``password``."""
    if not stored:
        return False
    if stored.startswith("SCRAM-SHA-256$"):
        try:
            iterations, salt = stored.split("$")[1].split(":")
            expected = scram_verifier(password, base64.b64decode(salt), int(iterations))
        except (ValueError, IndexError):
            return False
        return hmac.compare_digest(expected, stored)
    if stored.startswith("md5"):
        digest = "md5" + hashlib.md5((password + user).encode("utf-8")).hexdigest()
        return hmac.compare_digest(digest, stored)
    return False


def read_or_generate_password(path, check_mode=False):
    """(password, generated): read ``path``, or create it with a random password (mode 0600)."""
    validate_path("owner_password_file", path)
    if os.path.lexists(path):
        password = _db.read_secret_file("owner_password_file", path)
    else:
        password = secrets.token_urlsafe(24)
        if not check_mode:
            os.makedirs(os.path.dirname(path) or ".", mode=0o750, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(password + "\n")
        return password, True
    if len(password) < 12:
        raise ValidationError("owner_password_file", "%s holds a password shorter than 12 characters" % path)
    return password, False


def _sql():
    from psycopg import sql
    return sql


# What the engine's database and role may never be: PostgreSQL's own (a role named postgres is the
# superuser, pg_ names are reserved, template databases are copied into every new one).
LOGIN_FIELDS = {"host": "login_host", "port": "login_port", "user": "login_user", "database": "name"}
RESERVED_DATABASES = ("postgres", "template0", "template1")
_PASSWORD_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def validate_request(database, owner, password, schema_target, settings):
    """Everything ``ensure_database`` is given, refused with the field named before anything is touched."""
    validate_name("name", database)
    if len(database) > 63:
        raise ValidationError("name", "%s is longer than the 63 characters PostgreSQL keeps of a name"
                              % shown(database))
    if database.lower() in RESERVED_DATABASES:
        raise ValidationError("name", "%s is one of PostgreSQL's own databases" % shown(database))
    validate_name("owner", owner)
    if len(owner) > 63 or owner.lower() == "postgres" or owner.lower().startswith("pg_"):
        raise ValidationError("owner", "%s is PostgreSQL's own role or a reserved name (pg_...), or longer than 63 "
                                       "characters" % shown(owner))
    if password is not None and (not isinstance(password, str) or len(password) < 12):
        raise ValidationError("owner_password", "must be at least 12 characters")
    if password is not None and _PASSWORD_CONTROL.search(password):
        raise ValidationError("owner_password", "holds a newline, a NUL or another control character, which no "
                                                "client can send")
    known = isinstance(schema_target, int) and not isinstance(schema_target, bool) and \
        1 <= schema_target <= _schema.LATEST_VERSION
    if schema_target is not None and not known:
        raise ValidationError("schema_version", "%s is not a schema version this collection knows (1-%d)"
                              % (shown(schema_target), _schema.LATEST_VERSION))
    unknown = sorted(set(settings or {}) - set(_db.SETTING_DEFAULTS))
    if unknown:
        raise ValidationError("settings", "unknown engine settings: %s" % ", ".join(unknown))
    lease = (settings or {}).get("reservation_lease_seconds")
    if lease is not None and (isinstance(lease, bool) or not isinstance(lease, int) or not 5 <= lease <= 3600):
        raise ValidationError("reservation_lease_seconds", "%s is outside 5-3600" % shown(lease))


def ensure_database(login, database, owner, password, schema_target=None, check_mode=False, settings=None):
    """Ensure role ``owner`` (with ``password``), database ``database``, its schema and its settings.

    ``login`` are superuser connection options (host, port, user, password, database);
    ``settings`` are engine settings (``engine_setting``) to hold, e.g. {"allow_test_driver": False}.
    """
    if password is None:
        raise ValidationError("owner_password", "must be at least 12 characters")
    validate_request(database, owner, password, schema_target, settings)
    sql = _sql()
    actions = []
    admin = _db.connect_raw(_db.resolve_engine_options(dict(login, password_file=None), LOGIN_FIELDS))
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (owner,))
            role = cur.fetchone()
            if role is None:
                actions.append("create role %s" % owner)
                if not check_mode:
                    cur.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(owner), sql.Literal(scram_verifier(password))))
            elif not password_matches(role["rolpassword"], password, owner):
                actions.append("set the password of role %s" % owner)
                if not check_mode:
                    cur.execute(sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(
                        sql.Identifier(owner), sql.Literal(scram_verifier(password))))
            cur.execute("SELECT r.rolname AS owner FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba"
                        " WHERE d.datname = %s", (database,))
            db = cur.fetchone()
            if db is None:
                actions.append("create database %s" % database)
                if not check_mode:
                    cur.execute(sql.SQL("CREATE DATABASE {} OWNER {} ENCODING 'UTF8' TEMPLATE template0").format(
                        sql.Identifier(database), sql.Identifier(owner)))
                    # only the engine's role may connect; everyone else is refused
                    cur.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(database)))
            elif db["owner"] != owner:
                actions.append("change the owner of database %s to %s" % (database, owner))
                if not check_mode:
                    cur.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                        sql.Identifier(database), sql.Identifier(owner)))
            cur.execute("SHOW hba_file")
            hba_file = cur.fetchone()["hba_file"]
            cur.execute("SHOW config_file")
            config_file = cur.fetchone()["config_file"]
            cur.execute("SHOW server_version")
            server_version = cur.fetchone()["server_version"]
    finally:
        admin.close()
    schema = _ensure_schema(login, database, owner, schema_target, check_mode, created=bool(
        [a for a in actions if a.startswith("create database")]))
    actions.extend("apply schema migration %s" % m for m in schema["applied"])
    actions.extend(_ensure_settings(login, database, settings or {}, check_mode))
    return {"changed": bool(actions), "actions": actions, "schema": schema, "hba_file": hba_file,
            "config_file": config_file, "server_version": server_version}


def _ensure_schema(login, database, owner, target, check_mode, created):
    if check_mode and created:
        # the database does not exist yet: every migration would be applied
        target, pending = _db.pending_migrations(0, target)
        return {"from_version": 0, "to_version": target, "applied": pending}
    conn = _db.connect_raw(_db.resolve_engine_options(dict(login, database=database, password_file=None), LOGIN_FIELDS))
    try:
        current, new, applied = _db.migrate(conn, target, check_mode=check_mode, owner=owner)
    finally:
        conn.close()
    return {"from_version": current, "to_version": new, "applied": applied}


def _ensure_settings(login, database, settings, check_mode):
    """Hold ``settings`` in the engine's ``engine_setting`` table; the actions that takes."""
    if not settings:
        return []
    try:
        options = _db.resolve_engine_options(dict(login, database=database, password_file=None), LOGIN_FIELDS)
        conn = _db.connect_raw(options)
    except EngineConnectionError:
        if check_mode:  # the database would be created first
            return ["set %s to %s" % (k, _json(v)) for k, v in sorted(settings.items())]
        raise
    actions = []
    try:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("SELECT to_regclass('engine_setting') IS NOT NULL AS present")
            if not cur.fetchone()["present"]:
                # an older schema (schema_version below the settings) has none to hold
                return ["set %s to %s" % (k, _json(v)) for k, v in sorted(settings.items())] if check_mode else []
            current = _db.read_settings(conn)
            for name, value in sorted(settings.items()):
                if current.get(name, _db.SETTING_DEFAULTS[name]) == value and name in current:
                    continue
                actions.append("set %s to %s" % (name, _json(value)))
                if not check_mode:
                    from psycopg.types.json import Jsonb

                    cur.execute("INSERT INTO engine_setting (name, value) VALUES (%s, %s) ON CONFLICT (name)"
                                " DO UPDATE SET value = EXCLUDED.value, updated_at = now()", (name, Jsonb(value)))
    finally:
        conn.close()
    return actions


def _json(value):
    return "true" if value is True else "false" if value is False else str(value)
