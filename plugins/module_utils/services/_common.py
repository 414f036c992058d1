# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every resource service shares: name checks, change computation, results."""

from __future__ import annotations

import datetime
import decimal
import ipaddress
import posixpath
import re
import uuid

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import ConflictError, ValidationError
from ansible_collections.virtplane.kvm.plugins.module_utils.engine._schema import NAME_PATTERN

_NAME = re.compile(NAME_PATTERN)


def validate_name(field, value):
    if value is None or not _NAME.match(value):
        raise ValidationError(field, "'%s' is not a valid name: use 1-64 letters, digits, '.', '_' or '-', "
                                     "starting with a letter or digit" % (value,))
    return value


def plain(value):
    """A DB value as Ansible returns it (JSON-safe, stable)."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return str(value)
    if isinstance(value, (ipaddress.IPv4Interface, ipaddress.IPv6Interface)):
        return str(value.ip)  # an inet column holding a host address
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return str(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def changed_fields(current, desired):
    """The fields of ``desired`` (None = leave as is) whose value differs from ``current``."""
    return {k: v for k, v in desired.items() if v is not None and plain(current.get(k)) != plain(v)}


def refuse_dependants(action, kind, name, dependants):
    """Refuse to remove an object others still stand on, listing them all."""
    parts = ["%s %s" % (label, ", ".join(sorted(names))) for label, names in dependants if names]
    if parts:
        raise ConflictError("Cannot %s %s '%s': it still has %s" % (action, kind, name, "; ".join(parts)))


class Outcome:
    """What a service did (or would do, in check mode)."""

    def __init__(self, changed=False, before=None, after=None, resource=None, actions=None):
        self.changed = changed
        self.before = before if before is not None else {}
        self.after = after if after is not None else {}
        self.resource = resource
        self.actions = actions or []

    @property
    def diff(self):
        return {"before": self.before, "after": self.after}


def merge_outcomes(first, second):
    """One result for two steps on the same object (create, then attach)."""
    return Outcome(first.changed or second.changed, dict(first.before, **second.before),
                   dict(first.after, **second.after), second.resource or first.resource,
                   first.actions + second.actions)


def _sql():
    from psycopg import sql  # imported here: psycopg's absence is reported by engine._db
    return sql


def _adapt(value):
    if isinstance(value, (dict, list)) and not isinstance(value, str):
        from psycopg.types.json import Jsonb
        return Jsonb(value)
    return value


def insert_row(cur, table, values):
    """INSERT ... RETURNING * with identifiers quoted by psycopg, never by string formatting."""
    sql = _sql()
    columns = sorted(values)
    cur.execute(sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING *").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(sql.Placeholder() * len(columns))), [_adapt(values[c]) for c in columns])
    return cur.fetchone()


def update_row(cur, table, row_id, changes):
    sql = _sql()
    columns = sorted(changes)
    assignments = [sql.SQL("{} = %s").format(sql.Identifier(c)) for c in columns]
    assignments.append(sql.SQL("updated_at = now()"))
    cur.execute(sql.SQL("UPDATE {} SET {} WHERE id = %s RETURNING *").format(
        sql.Identifier(table), sql.SQL(", ").join(assignments)),
        [_adapt(changes[c]) for c in columns] + [row_id])
    return cur.fetchone()


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kib": 1024, "m": 1024 ** 2, "mib": 1024 ** 2, "g": 1024 ** 3,
              "gib": 1024 ** 3, "t": 1024 ** 4, "tib": 1024 ** 4, "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3,
              "tb": 1000 ** 4}


def parse_size(field, value):
    """Bytes from '10GiB', '512MiB', '1.5G' (binary), '20GB' (decimal) or a plain number of bytes."""
    if isinstance(value, bool):
        raise ValidationError(field, "%r is not a size" % (value,))
    if isinstance(value, int):
        number, unit = value, ""
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise ValidationError(field, "'%s' is not a size: use a number with a unit such as 10GiB or 512MiB"
                                  % (value,))
        number, unit = match.group(1), match.group(2)
        if unit.lower() not in SIZE_UNITS:
            raise ValidationError(field, "'%s' has an unknown unit '%s' (use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)"
                                  % (value, unit))
    size = int(decimal.Decimal(number) * SIZE_UNITS[unit.lower()])
    if size <= 0:
        raise ValidationError(field, "'%s' is not a usable size: it must be more than 0 bytes" % (value,))
    return size


_UNSAFE = re.compile(r"[\s\"'<>&`;|$\\*?(){}\[\]!#~]")


def validate_text(field, value, what="value"):
    """Paths, IQNs, addresses: refuse whitespace and shell/XML metacharacters outright."""
    if not isinstance(value, str) or not value:
        raise ValidationError(field, "a %s is required" % what)
    bad = sorted(set(_UNSAFE.findall(value)))
    if bad:
        raise ValidationError(field, "'%s' contains characters that are not allowed in a %s: %s"
                              % (value, what, " ".join(repr(c) for c in bad)))
    return value


def validate_path(field, value):
    validate_text(field, value, "path")
    if not value.startswith("/") or posixpath.normpath(value) != value:
        raise ValidationError(field, "'%s' must be an absolute, normalized path (no '..', '.', '//' or trailing '/')"
                              % value)
    return value


def find_in_datacenter(cur, select, alias, kind, name, datacenter=None):
    """The row of a data-center-scoped object (storage domain, network) by name.

    The name alone is enough while it is unique; when several data centers use it, the
    caller must say which one.
    """
    if datacenter:
        cur.execute(select + " WHERE %s.name = %%s AND d.name = %%s" % alias, (name, datacenter))
        return cur.fetchone()
    cur.execute(select + " WHERE %s.name = %%s" % alias, (name,))
    rows = cur.fetchall()
    if len(rows) > 1:
        raise ValidationError("datacenter", "%s '%s' exists in data centers %s: name one"
                              % (kind, name, ", ".join(sorted(r["datacenter"] for r in rows))))
    return rows[0] if rows else None
