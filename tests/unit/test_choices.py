"""The modules' fixed sets of values, from their one place, against what the database accepts."""

import re

from ansible_collections.virtplane.kvm.plugins.module_utils import _choices
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _schema

SCHEMA = "\n".join(m.sql for m in _schema.MIGRATIONS)


def _check_values(column):
    """The values of the CHECK (<column> IN (...)) constraints the migrations declare for ``column``."""
    found = set()
    for values in re.findall(r"\b%s\s+IN \(([^)]*)\)" % column, SCHEMA):
        found.update(re.findall(r"'([^']*)'", values))
    return found


def test_every_stored_choice_is_one_the_database_accepts():
    assert set(_choices.SCHEDULING_POLICIES) <= set(_schema.SCHEDULING_POLICIES)
    assert set(_choices.MIGRATION_POLICIES) <= set(_schema.MIGRATION_POLICIES)
    assert set(_choices.EVENT_SEVERITIES) <= set(_schema.EVENT_SEVERITIES)
    assert set(_choices.STORAGE_TYPES) <= _check_values("type")
    assert set(_choices.DATACENTER_STORAGE_TYPES) <= _check_values("storage_type")
    assert set(_choices.DISK_FORMATS) <= _check_values("format")
    assert set(_choices.DISK_BUSES) <= _check_values("bus")
    assert set(_choices.NETWORK_MODES) <= _check_values("mode")
    assert set(_choices.HOST_DOMAIN_TYPES) <= _check_values("domain_type_setting")
    assert set(_choices.JOB_STATUSES) <= _check_values("status")
    assert set(_choices.VM_STATUSES) == set(_schema.VM_STATUSES)
    assert set(_choices.FENCE_AGENTS) - {"none"} == _check_values("fence_agent")
    assert set(_choices.RESILIENCE_POLICIES) == _check_values("resilience_policy")
    assert set(_choices.AFFINITY_RULES) - {"none"} <= _check_values("vm_rule") & _check_values("host_rule")


def test_modules_take_their_choices_from_the_one_place():
    import glob
    import os

    modules = os.path.join(os.path.dirname(__file__), "..", "..", "plugins", "modules")
    for path in glob.glob(os.path.join(modules, "*.py")):
        with open(path) as handle:
            code = handle.read().split('RETURN = r"""')[-1]
        literal = re.findall(r"choices=\[[^\]]*\]", code)
        assert not literal, "%s spells its choices out: %s" % (os.path.basename(path), literal)
