"""The virtplane.kvm.console connection's refusals, before and at opening a console (a console that answers is the
lab's: tests/lab/test_resources.py runs ad-hoc commands in a lab VM through it)."""

import os
import subprocess

import pytest
import yaml

from tests.support.playbook import BIN, COLLECTIONS, ROOT

ENV = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
           ANSIBLE_NOCOLOR="1")


def adhoc(tmp_path, variables, command="uname -a"):
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump({"all": {"hosts": {"vm1": dict({"ansible_connection": "virtplane.kvm.console"},
                                                                  **variables)}}}))
    return subprocess.run([os.path.join(BIN, "ansible"), "-i", str(path), "vm1", "-m", "ansible.builtin.raw", "-a",
                           command], env=ENV, cwd=ROOT, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("variables, message", [
    ({}, "virtplane.kvm.console: no libvirt URI for vm1"),
    ({"ansible_virtplane_libvirt_uri": "test:///default", "ansible_virtplane_domain": "test\nrm -rf /"},
     "virtplane.kvm.console: 'test\\nrm -rf /' is not a VM name"),
    ({"ansible_virtplane_libvirt_uri": "test:///default", "ansible_virtplane_domain": "../test"},
     "virtplane.kvm.console: '../test' is not a VM name"),
    ({"ansible_virtplane_libvirt_uri": "test:///default", "ansible_virtplane_domain": "nosuchvm"},
     "virtplane.kvm.console: cannot open the serial console of nosuchvm: Domain not found"),
    # the test driver's domain 'test' has no console port to open
    ({"ansible_virtplane_libvirt_uri": "test:///default", "ansible_virtplane_domain": "test"},
     "virtplane.kvm.console: cannot open the serial console of test: "),
])
def test_a_console_that_cannot_be_reached_is_one_clear_message(tmp_path, variables, message):
    run = adhoc(tmp_path, variables)
    assert run.returncode != 0
    assert message in run.stdout + run.stderr, run.stdout + run.stderr
    assert "Traceback" not in run.stdout + run.stderr
