# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cluster scheduling policies and their parameters (pure: no DB, no libvirt).

The names follow oVirt's policies so that an administrator recognizes them:
  none                  place on any host that passes the filters; never balance
  evenly_distributed    spread CPU load; balance when a host stays above high_utilization
  power_saving          pack VMs; empty hosts below low_utilization so they can be switched off
  vm_evenly_distributed spread the number of VMs; balance above high_vm_count
"""

from __future__ import annotations

import re

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import ValidationError
from ansible_collections.virtplane.kvm.plugins.module_utils._validation import shown

_DIGITS = re.compile(r"[0-9]{1,9}")

# parameter -> (minimum, maximum, default)
POLICY_PARAMETERS = {
    "none": {},
    "evenly_distributed": {
        "high_utilization": (1, 100, 80),
        "duration_minutes": (1, 1440, 2),
    },
    "power_saving": {
        "low_utilization": (0, 99, 20),
        "high_utilization": (1, 100, 80),
        "duration_minutes": (1, 1440, 2),
    },
    "vm_evenly_distributed": {
        "high_vm_count": (1, 10000, 10),
        "migration_threshold": (1, 10000, 5),
    },
}


def normalize_parameters(policy, params, field="scheduling_policy_params"):
    """Check ``params`` against ``policy``; return them with the policy's defaults filled in."""
    known = POLICY_PARAMETERS[policy]
    params = dict(params or {})
    unknown = sorted((shown(k) for k in set(params) - set(known)), key=str)
    if unknown:
        allowed = ", ".join(sorted(known)) if known else "none"
        raise ValidationError(field, "%s not a parameter of policy '%s' (allowed: %s)"
                              % (", ".join(unknown), policy, allowed))
    result = {}
    for name, (low, high, default) in known.items():
        value = params.get(name, default)
        if isinstance(value, str) and _DIGITS.fullmatch(value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("%s.%s" % (field, name), "%s is not a whole number written in digits" % shown(value))
        if not low <= value <= high:
            raise ValidationError("%s.%s" % (field, name), "%s is outside %d-%d" % (shown(value), low, high))
        result[name] = value
    if "low_utilization" in result and result["low_utilization"] >= result["high_utilization"]:
        raise ValidationError(field, "low_utilization (%d) must be below high_utilization (%d)"
                              % (result["low_utilization"], result["high_utilization"]))
    return result
