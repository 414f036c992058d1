"""Scheduling policy parameters: defaults, ranges, and the messages for bad ones."""

import pytest

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import ValidationError
from ansible_collections.virtplane.kvm.plugins.module_utils.scheduler._policies import normalize_parameters


@pytest.mark.parametrize("policy, given, expected", [
    ("none", {}, {}),
    ("evenly_distributed", {}, {"high_utilization": 80, "duration_minutes": 2}),
    ("evenly_distributed", {"high_utilization": 70}, {"high_utilization": 70, "duration_minutes": 2}),
    ("evenly_distributed", {"high_utilization": "65"}, {"high_utilization": 65, "duration_minutes": 2}),
    ("power_saving", {"low_utilization": 10},
     {"low_utilization": 10, "high_utilization": 80, "duration_minutes": 2}),
    ("vm_evenly_distributed", {"high_vm_count": 3}, {"high_vm_count": 3, "migration_threshold": 5}),
])
def test_defaults_are_filled(policy, given, expected):
    assert normalize_parameters(policy, given) == expected


@pytest.mark.parametrize("policy, given, field, cause", [
    ("none", {"high_utilization": 80}, "scheduling_policy_params",
     "'high_utilization' not a parameter of policy 'none'"),
    ("none", {"high_utilization\n": 80}, "scheduling_policy_params", "'high_utilization\\n' not a parameter"),
    ("evenly_distributed", {"low_utilization": 5}, "scheduling_policy_params", "allowed: duration_minutes, high_"),
    ("evenly_distributed", {"high_utilization": 0}, "scheduling_policy_params.high_utilization", "outside 1-100"),
    ("evenly_distributed", {"high_utilization": "lots"}, "scheduling_policy_params.high_utilization",
     "not a whole number written in digits"),
    ("evenly_distributed", {"high_utilization": "75\n"}, "scheduling_policy_params.high_utilization",
     "'75\\n' is not a whole number"),
    ("evenly_distributed", {"high_utilization": "\u0667\u0660"}, "scheduling_policy_params.high_utilization",
     "not a whole number"),
    ("evenly_distributed", {"high_utilization": "1_0"}, "scheduling_policy_params.high_utilization",
     "not a whole number"),
    ("evenly_distributed", {"high_utilization": True}, "scheduling_policy_params.high_utilization",
     "not a whole number"),
    ("power_saving", {"low_utilization": 90, "high_utilization": 50}, "scheduling_policy_params",
     "low_utilization (90) must be below high_utilization (50)"),
])
def test_bad_parameters_name_the_field(policy, given, field, cause):
    with pytest.raises(ValidationError) as error:
        normalize_parameters(policy, given)
    assert error.value.field == field
    assert cause in str(error.value)
    assert "\n" not in str(error.value)
