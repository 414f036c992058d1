"""Names, change detection and dependant refusal shared by every resource."""

import pytest

from ansible_collections.virtplane.kvm.plugins.module_utils import _validation
from ansible_collections.virtplane.kvm.plugins.module_utils._errors import ConflictError, ValidationError
from ansible_collections.virtplane.kvm.plugins.module_utils._validation import (
    shown,
    validate_description,
    validate_name,
    validate_range,
)
from ansible_collections.virtplane.kvm.plugins.module_utils.engine._provision import password_matches, scram_verifier
from ansible_collections.virtplane.kvm.plugins.module_utils.services._common import (
    changed_fields,
    refuse_dependants,
)


@pytest.mark.parametrize("name", ["Default", "prod-1", "hv1.example.com", "a", "x" * 64, "db_2"])
def test_valid_names(name):
    assert validate_name("name", name) == name


@pytest.mark.parametrize("name", ["", "-dash", "has space", "semi;colon", "x" * 65, "quote'", "<xml>", None,
                                  "web01\n", "web01\r\n", "web\x00", "\nweb01", 42, ["web01"]])
def test_invalid_names_name_the_field(name):
    with pytest.raises(ValidationError, match="Invalid value for 'name'") as caught:
        validate_name("name", name)
    assert "\n" not in str(caught.value)  # one line, whatever was typed


def test_shown_values_stay_on_one_line_and_short():
    assert shown("a\nb\tc\x00") == "'a\\nb\\tc\\x00'"
    assert shown("x" * 500).endswith("...'") and len(shown("x" * 500)) < 100


@pytest.mark.parametrize("value, message", [
    (-1, "-1 is outside 1-3600 seconds"), (0, "0 is outside 1-3600"), (10 ** 30, "outside 1-3600"),
    (True, "is not a whole number"), (1.5, "is not a whole number"),
])
def test_ranges_refuse_negative_huge_and_non_integers(value, message):
    with pytest.raises(ValidationError, match=message) as caught:
        validate_range("probe_timeout", value, 1, 3600, "seconds")
    assert caught.value.field == "probe_timeout"


def test_descriptions_keep_newlines_but_no_control_characters():
    assert validate_description("description", "two\nlines\tand a tab") == "two\nlines\tand a tab"
    for bad, cause in (("nul\x00", "(\\x00)"), ("bell\x07", "(\\x07)"), ("x" * 5000, "at most 4096")):
        with pytest.raises(ValidationError) as caught:
            validate_description("description", bad)
        assert cause in str(caught.value)


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


@pytest.mark.parametrize("value, expected", [
    ("10GiB", 10 * 1024 ** 3), ("512MiB", 512 * 1024 ** 2), ("1.5G", 1536 * 1024 ** 2), ("20GB", 20 * 10 ** 9),
    ("1048576", 1048576), (1048576, 1048576), ("1 TiB", 1024 ** 4), ("1024k", 1048576), ("1.5 MiB", 1572864),
])
def test_sizes_with_units(value, expected):
    assert _validation.parse_size("size", value) == expected


@pytest.mark.parametrize("value, message", [
    ("0", "is not a usable size"), ("0GiB", "is not a usable size"), ("10 parsecs", "unknown unit 'parsecs'"),
    ("-1GiB", "is not a size"), ("GiB", "is not a size"), (True, "is not a size"),
    ("1.9", "is not a whole number of bytes"), ("0.5", "is not a whole number of bytes"), (-5, "is not a usable size"),
    ("10GiB\n", "is not a size"), ("10\nGiB", "is not a size"), ("2PiB", "unknown unit"),
    ("9" * 30, "more than the 1 PiB"), (2 ** 70, "more than the 1 PiB"), ("\u0663GiB", "is not a size"),
    ("1.00000000000000000000000000001", "is not a whole number of bytes"),
    ("1.0000000000000000000000000001KiB", "is not a whole number of bytes"),
    ("1", "at least 1 MiB"), ("513", "at least 1 MiB"), ("1048577", "whole 512-byte sectors"),
])
def test_bad_sizes_name_the_field_and_cause(value, message):
    with pytest.raises(ValidationError, match=message) as caught:
        _validation.parse_size("size", value)
    assert caught.value.field == "size"


@pytest.mark.parametrize("path", ["relative/dir", "/a/../b", "/a/", "/a//b", "/a/./b", "/a b", "/a;b", "/a$(x)",
                                  "/a<b>", "/a`b`", "/a\n", "/a\x00b", "/a\tb"])
def test_paths_with_metacharacters_or_not_normalized_are_refused(path):
    with pytest.raises(ValidationError):
        _validation.validate_path("posixfs.path", path)
