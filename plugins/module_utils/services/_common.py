# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every resource service shares: name checks, change computation, results."""

from __future__ import annotations

import datetime
import decimal
import ipaddress
import uuid

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import ConflictError


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


class Spec:
    """A module's parameters for its service: built from the argument spec, checked on creation.

    A subclass lists its ``FIELDS`` and checks them in ``validate`` (before anything is read or
    changed); the service's one entry point is ``ensure(engine, spec, check_mode)``.
    """

    FIELDS = ()

    def __init__(self, **values):
        unknown = sorted(set(values) - set(self.FIELDS))
        if unknown:
            raise TypeError("unknown fields %s" % ", ".join(unknown))
        for field in self.FIELDS:
            setattr(self, field, values.get(field))
        self.validate()

    @classmethod
    def from_params(cls, params):
        return cls(**{field: params.get(field) for field in cls.FIELDS})

    def validate(self):
        """Refuse what cannot be accepted (ValidationError naming the field)."""


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
