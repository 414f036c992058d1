# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test plugin: whether a value is a network in CIDR notation that PostgreSQL's pg_hba.conf takes."""

from __future__ import annotations

import ipaddress
import re

# an address, a slash and a prefix length, nothing around them (no space, no newline, no zone index)
_SHAPE = re.compile(r"[0-9A-Fa-f.:]+/[0-9]{1,3}")


def network_cidr(value):
    """True for 10.0.0.0/24, 192.0.2.7/32, fd00::/64 (host bits may be set: pg_hba masks them); False for anything
    else, a non-string included."""
    if not isinstance(value, str) or not _SHAPE.fullmatch(value):
        return False
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


class TestModule:
    def tests(self):
        return {"network_cidr": network_cidr}
