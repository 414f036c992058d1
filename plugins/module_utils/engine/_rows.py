# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Writing rows: identifiers quoted by psycopg, values always parameters, never string formatting."""

from __future__ import annotations

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import ValidationError
from ansible_collections.virtplane.kvm.plugins.module_utils.engine._db import jsonb, pgsql


def _adapt(value):
    if isinstance(value, (dict, list)) and not isinstance(value, str):
        return jsonb(value)
    return value


def insert(cur, table, values):
    """INSERT ... RETURNING *."""
    columns = sorted(values)
    cur.execute(pgsql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING *").format(
        pgsql.Identifier(table), pgsql.SQL(", ").join(map(pgsql.Identifier, columns)),
        pgsql.SQL(", ").join(pgsql.Placeholder() * len(columns))), [_adapt(values[c]) for c in columns])
    return cur.fetchone()


def update(cur, table, row_id, changes, touch=True):
    """UPDATE ... RETURNING * of the row ``row_id``; ``touch`` sets ``updated_at`` too."""
    columns = sorted(changes)
    assignments = [pgsql.SQL("{} = %s").format(pgsql.Identifier(c)) for c in columns]
    if touch:
        assignments.append(pgsql.SQL("updated_at = now()"))
    cur.execute(pgsql.SQL("UPDATE {} SET {} WHERE id = %s RETURNING *").format(
        pgsql.Identifier(table), pgsql.SQL(", ").join(assignments)),
        [_adapt(changes[c]) for c in columns] + [row_id])
    return cur.fetchone()


def delete(cur, table, row_id):
    cur.execute(pgsql.SQL("DELETE FROM {} WHERE id = %s").format(pgsql.Identifier(table)), (row_id,))


def names(cur, statement, args):
    """The ``name`` column of a query, in order."""
    cur.execute(statement, args)
    return [r["name"] for r in cur.fetchall()]


def now(cur):
    cur.execute("SELECT now() AS now")
    return cur.fetchone()["now"]


def by_name(cur, select, alias, kind, name, datacenter=None):
    """The row of a data-center-scoped object (storage domain, network) by name.

    The name alone is enough while it is unique; when several data centers use it, the caller
    must say which one.
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
