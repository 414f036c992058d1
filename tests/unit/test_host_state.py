"""What a role recorded on a host, compared with the host later (virtplane.kvm.host_state), and the digest of a
role's inputs and code (virtplane.kvm.role_digest): every kind of change is found, nothing else is."""

import os
import shutil
import time

import pytest
from ansible.errors import AnsibleError

from ansible_collections.virtplane.kvm.plugins.lookup.role_digest import _tree, input_names
from ansible_collections.virtplane.kvm.plugins.modules.host_state import differences, file_state, write_record
from tests.support.playbook import ROOT

DIGEST = "ab" * 32


def append(path, text):
    with open(path, "a") as handle:
        handle.write(text)


def recorded(paths, digest=DIGEST, at=None):
    return {"format": 1, "digest": digest, "files": {p: file_state(p) for p in paths}, "units": {}, "packages": [],
            "recorded_at": time.time() if at is None else at}


@pytest.fixture
def host(tmp_path):
    conf = tmp_path / "qemu.conf"
    conf.write_text("migration_port_min = 49152\n")
    conf.chmod(0o600)
    hooks = tmp_path / "hooks"
    hooks.mkdir(mode=0o755)
    link = tmp_path / "link"
    link.symlink_to(conf)
    gone = tmp_path / "old"
    return {"conf": str(conf), "hooks": str(hooks), "link": str(link), "gone": str(gone)}


def test_an_untouched_host_holds_its_record(host):
    record = recorded(host.values())
    assert record["files"][host["gone"]] == {"type": "absent"}
    assert record["files"][host["hooks"]]["type"] == "directory"
    assert record["files"][host["link"]]["type"] == "link"
    assert differences(None, record, DIGEST, 86400, time.time()) == []


@pytest.mark.parametrize("change, found", [
    (lambda h: append(h["conf"], "# by hand\n"), "qemu.conf: content"),
    (lambda h: os.chmod(h["conf"], 0o644), "qemu.conf: mode"),
    (lambda h: os.chmod(h["hooks"], 0o700), "hooks: mode"),
    (lambda h: os.unlink(h["conf"]), "qemu.conf: gid, mode, content, type, uid"),
    (lambda h: append(h["gone"], "back"), "old: gid, mode, content, type, uid"),
    (lambda h: (os.unlink(h["link"]), os.symlink(h["hooks"], h["link"])), "link: target"),
    (lambda h: (shutil.rmtree(h["hooks"]), append(h["hooks"], "")), "hooks: mode, content, type"),
])
def test_each_change_by_hand_is_found(host, change, found):
    record = recorded(host.values())
    change(host)
    result = differences(None, record, DIGEST, 86400, time.time())
    assert len(result) == 1 and result[0].endswith(found), result


def test_another_digest_or_an_old_record_does_not_count(host):
    record = recorded(host.values())
    now = time.time()
    assert differences(None, record, "cd" * 32, 86400, now) == ["the role's inputs or code changed since the record"]
    assert differences(None, record, DIGEST, 60, now + 3600)[0].startswith("the record is 3600 s old")
    assert differences(None, record, DIGEST, 0, now)[0].startswith("the record is 0 s old (max_age 0 s)")
    # a clock set back (a record from the future) does not count either
    assert differences(None, recorded(host.values(), at=now + 3600), DIGEST, 86400, now)


def test_the_record_is_readable_by_root_alone(tmp_path):
    path = tmp_path / "role-state" / "hypervisor.json"
    write_record(str(path), recorded([]))
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    assert [p.name for p in path.parent.iterdir()] == ["hypervisor.json"]


def test_a_role_digest_changes_with_any_file_of_the_role(tmp_path):
    import hashlib
    role = tmp_path / "role"
    shutil.copytree(os.path.join(ROOT, "roles", "hypervisor"), role)

    def digest():
        d = hashlib.sha256()
        _tree(d, str(role))
        return d.hexdigest()

    first = digest()
    (role / "__pycache__").mkdir()
    (role / "__pycache__" / "x.pyc").write_bytes(b"cache")
    assert digest() == first  # Python caches do not count
    with open(role / "templates" / "qemu.conf.j2", "a") as handle:
        handle.write("# one more line\n")
    assert digest() != first
    with pytest.raises(AnsibleError, match="neither a file nor a folder"):
        _tree(hashlib.sha256(), str(tmp_path / "missing"))


def test_the_inputs_of_a_role_are_its_documented_options_and_defaults():
    names = input_names(os.path.join(ROOT, "roles", "hypervisor"), "hypervisor_")
    assert "hypervisor_migration_port_max" in names and "hypervisor_fence" in names
    assert "hypervisor_state_max_age" in names
    # internal variables of the role (vars/main.yml) and registered results are no inputs
    assert "hypervisor_state_file" not in names and "hypervisor_state" not in names
    engine = input_names(os.path.join(ROOT, "roles", "engine"), "engine_")
    assert "engine_db_port" in engine and "engine_monitor_packages" not in engine
