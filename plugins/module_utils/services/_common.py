# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every resource service shares: name checks, change computation, results."""

from __future__ import annotations

import datetime
import decimal
import ipaddress
import uuid

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import ConflictError, ValidationError


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
