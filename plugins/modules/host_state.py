#!/usr/bin/python
# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: host_state
short_description: Record what a role set up on a host, and tell later whether the host still holds it
version_added: 0.6.0
description:
  - With O(state=record), after a role has set up a host, keeps in O(path) what the role left there - each
    file and directory it manages (its content, mode and owner, or its absence), each systemd unit (active or
    not, enabled, disabled or masked), the packages it installed - with O(digest), a digest of the role's
    inputs and of the code it ships.
  - With O(state=check), on a later run, compares the host with that record. The host holds the role's state
    when the record is there, has the same O(digest), is younger than O(max_age), and every file, unit and
    package still reads as recorded. Anything else - a file edited by hand, a stopped service, a removed
    package, a new input, a new release of the collection, an old record - is named in RV(differences), and
    the role then runs all its tasks, which repair it.
  - The roles of this collection (C(virtplane.kvm.engine), C(virtplane.kvm.hypervisor)) skip their tasks when
    the host holds their state, so that an unchanged re-run costs a few tasks instead of several dozen.
  - Hosts without systemd never hold a recorded state (their daemons are not units whose state can be read),
    so a role runs all its tasks on them. A unit that has failed is never recorded, and the next run sets the host
    up again.
  - Changes nothing in check mode, and O(state=check) never changes anything.
author: virtplane.kvm maintainers (@virtplane)
options:
  path:
    description:
      - The record's file, an absolute path. It is written with mode 0600 in a directory of mode 0700.
    type: path
    required: true
  digest:
    description:
      - Digest of the role's inputs and code (C(virtplane.kvm.role_digest)); a record with another digest
        does not count.
    type: str
    required: true
  state:
    description:
      - V(check) compares the host with the record; V(record) writes the record.
    type: str
    choices: [check, record]
    default: check
  files:
    description:
      - With O(state=record), absolute paths of the files, directories and devices to record (a path that
        does not exist is recorded as absent).
    type: list
    elements: path
    default: []
  units:
    description:
      - With O(state=record), systemd units whose state to record.
    type: list
    elements: str
    default: []
  packages:
    description:
      - With O(state=record), packages that must stay installed.
    type: list
    elements: str
    default: []
  max_age:
    description:
      - With O(state=check), seconds after which a record no longer counts, so that the role runs all its
        tasks at least that often (certificates checked for their end, package lists refreshed). 0 never
        lets a record count.
    type: int
    default: 86400
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
"""

EXAMPLES = r"""
- name: Tell whether the host still holds what the role set up
  virtplane.kvm.host_state:
    path: /var/lib/virtplane/role-state/myrole.json
    digest: "{{ lookup('virtplane.kvm.role_digest', role_path, prefix='myrole_') }}"
  register: myrole_state

- name: Set up the host
  ansible.builtin.include_tasks: setup.yml
  when: not myrole_state.holds

- name: Record it
  virtplane.kvm.host_state:
    path: /var/lib/virtplane/role-state/myrole.json
    digest: "{{ lookup('virtplane.kvm.role_digest', role_path, prefix='myrole_') }}"
    state: record
    files: [/etc/myrole.conf]
    units: [myrole.service]
    packages: [myrole]
  when: not myrole_state.holds
"""

RETURN = r"""
holds:
  description: With O(state=check), whether the host holds the recorded state for this digest.
  returned: always
  type: bool
systemd:
  description: Whether systemd runs the host (C(/run/systemd/system) exists); the roles choose how to run their
    daemons by it.
  returned: success
  type: bool
differences:
  description: With O(state=check), what differs from the record (at most 20 lines), empty when it holds.
  returned: always
  type: list
  elements: str
  sample: ["/etc/libvirt/qemu.conf: content", "unit libvirtd.service: ActiveState failed, recorded active"]
"""

import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.virtplane.kvm.plugins.module_utils import _choices

UNIT = re.compile(r"[A-Za-z0-9:_.@\\-]{1,255}")
PACKAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9+._:-]{0,127}")
DIGEST = re.compile(r"[0-9a-f]{16,128}")
UNIT_PROPERTIES = ("LoadState", "ActiveState", "UnitFileState")
FORMAT = 1
MAX_DIFFERENCES = 20


def file_state(path):
    """What is at `path`: its kind, mode, owner and, for a regular file, the SHA-256 of its content."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return {"type": "absent"}
    state = {"mode": "%04o" % stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
    if stat.S_ISREG(st.st_mode):
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        state.update(type="file", sha256=digest.hexdigest())
    elif stat.S_ISDIR(st.st_mode):
        state["type"] = "directory"
    elif stat.S_ISLNK(st.st_mode):
        state.update(type="link", target=os.readlink(path))
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        state.update(type="device", rdev=st.st_rdev)
    else:
        state["type"] = "other"
    return state


def unit_states(module, units):
    """Each unit's LoadState, ActiveState and UnitFileState, from one systemctl call."""
    if not units:
        return {}
    systemctl = module.get_bin_path("systemctl", required=True)
    rc, out, err = module.run_command([systemctl, "show", "--property=Id," + ",".join(UNIT_PROPERTIES), "--"]
                                      + list(units))
    if rc != 0:
        module.fail_json(msg="systemctl show failed: %s" % (err.strip() or out.strip()))
    blocks = out.strip().split("\n\n")
    if len(blocks) != len(units):
        module.fail_json(msg="systemctl show answered %d units for %d asked" % (len(blocks), len(units)))
    states = {}
    for unit, block in zip(units, blocks):  # noqa: B905 (counted above; EL 9's Python 3.9 has no strict=)
        values = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        states[unit] = {key: values.get(key, "") for key in UNIT_PROPERTIES}
    return states


def missing_packages(module, packages):
    """The packages of `packages` that are not installed (dpkg or rpm)."""
    if not packages:
        return []
    dpkg_query = module.get_bin_path("dpkg-query")
    if dpkg_query:
        _rc, out, _err = module.run_command([dpkg_query, "-W", "-f=${Package} ${db:Status-Abbrev}\\n", "--"]
                                            + list(packages))
        # the second letter of the status is the package's state: "hi" (held) is installed as "ii" is
        installed = {line.split()[0].split(":")[0] for line in out.splitlines()
                     if len(line.split()) > 1 and line.split()[1][1:2] == "i"}
        return [p for p in packages if p.split(":")[0] not in installed]
    rpm = module.get_bin_path("rpm", required=True)
    return [p for p in packages
            if module.run_command([rpm, "-q", "--whatprovides", "--", p])[0] != 0]


def read_record(path):
    try:
        with open(path) as handle:
            record = json.load(handle)
    except FileNotFoundError:
        return None, "no record of the role's state yet"
    except (OSError, ValueError) as exc:
        return None, "the record cannot be read: %s" % exc
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return None, "the record is of another format"
    return record, None


def differences(module, record, digest, max_age, now):
    """What differs between the host and `record` (empty when the host holds it)."""
    found = []
    if record.get("digest") != digest:
        return ["the role's inputs or code changed since the record"]
    age = now - record.get("recorded_at", 0)
    if max_age <= 0 or age > max_age or age < -60:
        return ["the record is %d s old (max_age %d s)" % (age, max_age)]
    for path, recorded in sorted(record.get("files", {}).items()):
        current = file_state(path)
        if current != recorded:
            keys = sorted(k for k in set(current) | set(recorded) if current.get(k) != recorded.get(k))
            found.append("%s: %s" % (path, ", ".join("content" if k == "sha256" else k for k in keys)))
    units = record.get("units", {})
    for unit, current in unit_states(module, sorted(units)).items():
        for key in UNIT_PROPERTIES:
            if current[key] != units[unit].get(key):
                recorded_value = units[unit].get(key) or "-"
                found.append("unit %s: %s %s, recorded %s" % (unit, key, current[key] or "-", recorded_value))
    found += ["package %s is not installed" % p for p in missing_packages(module, record.get("packages", []))]
    return found


def write_record(path, record):
    """Replace the record at `path` in one step (a 0700 directory, a 0600 file)."""
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700)
    os.chmod(directory, 0o700)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".host-state-")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(record, handle, indent=1, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)
        shutil.move(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            digest=dict(type="str", required=True),
            state=dict(type="str", choices=list(_choices.HOST_STATE_STATES), default="check"),
            files=dict(type="list", elements="path", default=[]),
            units=dict(type="list", elements="str", default=[]),
            packages=dict(type="list", elements="str", default=[]),
            max_age=dict(type="int", default=86400),
        ),
        supports_check_mode=True,
    )
    p = module.params
    problems = []
    if not os.path.isabs(p["path"]) or p["path"].endswith("/") or "\n" in p["path"]:
        problems.append("path %r must be an absolute path of a file" % p["path"])
    if not DIGEST.fullmatch(p["digest"]):
        problems.append("digest %r must be 16 to 128 lowercase hex digits" % p["digest"])
    problems += ["files: %r must be an absolute path" % f for f in p["files"]
                 if not os.path.isabs(f) or "\n" in f]
    problems += ["units: %r is not a systemd unit name" % u for u in p["units"] if not UNIT.fullmatch(u)]
    problems += ["packages: %r is not a package name" % n for n in p["packages"] if not PACKAGE.fullmatch(n)]
    if p["max_age"] < 0 or p["max_age"] > 10 * 365 * 86400:
        problems.append("max_age %d is out of range (0 to 315360000 seconds)" % p["max_age"])
    if problems:
        module.fail_json(msg="; ".join(problems))

    systemd = os.path.isdir("/run/systemd/system")
    if p["state"] == "check":
        record, why = read_record(p["path"])
        if not systemd:
            found = ["systemd does not run this host: its daemons' state cannot be read"]
        elif record is None:
            found = [why]
        else:
            try:
                found = differences(module, record, p["digest"], p["max_age"], time.time())
            except (AttributeError, KeyError, TypeError, ValueError):
                found = ["the record is malformed"]
        module.exit_json(changed=False, holds=not found, differences=found[:MAX_DIFFERENCES], systemd=systemd)

    if not systemd:
        module.exit_json(changed=False, holds=False, differences=[], systemd=False,
                         msg="systemd does not run this host: not recorded")
    missing = missing_packages(module, p["packages"])
    if missing:
        module.fail_json(msg="packages %s are not installed: nothing recorded" % ", ".join(missing))
    record = {"format": FORMAT, "digest": p["digest"],
              "files": {path: file_state(path) for path in p["files"]},
              "units": unit_states(module, sorted(set(p["units"]))),
              "packages": sorted(set(p["packages"]))}
    failed = sorted(u for u, state in record["units"].items() if state["ActiveState"] == "failed")
    if failed:
        # never keep a failed unit as the state to hold: the next run sets the host up again
        if not module.check_mode and os.path.exists(p["path"]):
            os.unlink(p["path"])
        module.warn("units %s failed: nothing recorded, the next run sets the host up again" % ", ".join(failed))
        module.exit_json(changed=False, holds=False, differences=[], systemd=True)
    old, _why = read_record(p["path"])
    changed = old is None or {k: v for k, v in old.items() if k != "recorded_at"} != record
    record["recorded_at"] = int(time.time())
    if not module.check_mode:
        write_record(p["path"], record)
    module.exit_json(changed=changed, holds=False, differences=[], systemd=True)


if __name__ == "__main__":
    main()
