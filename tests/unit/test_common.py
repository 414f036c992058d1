"""Names, change detection and dependant refusal shared by every resource."""

import pytest

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import ConflictError, ValidationError
from ansible_collections.virtplane.kvm.plugins.module_utils.engine._provision import password_matches, scram_verifier
from ansible_collections.virtplane.kvm.plugins.module_utils.services._common import (
    changed_fields,
    refuse_dependants,
    validate_name,
)


@pytest.mark.parametrize("name", ["Default", "prod-1", "hv1.example.com", "a", "x" * 64, "db_2"])
def test_valid_names(name):
    assert validate_name("name", name) == name


@pytest.mark.parametrize("name", ["", "-dash", "has space", "semi;colon", "x" * 65, "quote'", "<xml>", None])
def test_invalid_names_name_the_field(name):
    with pytest.raises(ValidationError, match="Invalid value for 'name'"):
        validate_name("name", name)


def test_changed_fields_ignores_unset_and_equal_values():
    current = {"a": 1, "b": "x", "c": {"k": 1}, "d": 4.0}
    assert changed_fields(current, {"a": 1, "b": None, "c": {"k": 1}, "d": 4}) == {}
    assert changed_fields(current, {"a": 2, "c": {"k": 2}}) == {"a": 2, "c": {"k": 2}}


def test_refusal_lists_every_dependant():
    with pytest.raises(ConflictError) as error:
        refuse_dependants("remove", "cluster", "prod", [("hosts", ["hv2", "hv1"]), ("VMs", [])])
    assert str(error.value) == "Cannot remove cluster 'prod': it still has hosts hv1, hv2"
    refuse_dependants("remove", "cluster", "prod", [("hosts", []), ("VMs", [])])


def test_scram_verifier_round_trip():
    verifier = scram_verifier("correct horse battery")
    assert verifier.startswith("SCRAM-SHA-256$4096:")
    assert password_matches(verifier, "correct horse battery", "virtplane")
    assert not password_matches(verifier, "wrong horse battery", "virtplane")
    assert not password_matches(None, "anything", "virtplane")


def test_md5_passwords_of_older_servers_are_recognized():
    # md5 of password + user name, as PostgreSQL stored it before SCRAM
    assert password_matches("md5" + "53f48b7c4b76a86ce72276c5755f217d", "secret", "postgres")
