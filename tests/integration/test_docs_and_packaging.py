"""What users see before they run anything: ansible-doc pages, the action group, the built collection."""

import os
import subprocess
import tarfile

import pytest
import yaml

from tests.support.playbook import BIN, COLLECTIONS, ROOT

MODULES = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "plugins", "modules")) if not f.startswith("_"))
ENV = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_NOCOLOR="1")


def test_ansible_doc_lists_every_module():
    listing = subprocess.run([os.path.join(BIN, "ansible-doc"), "-l", "virtplane.kvm"], env=ENV,
                             capture_output=True, text=True, check=True).stdout
    listed = sorted(line.split()[0].split(".")[-1] for line in listing.splitlines() if line.strip())
    assert listed == MODULES


@pytest.mark.parametrize("module", MODULES)
def test_each_page_renders_with_examples_and_return(module):
    page = subprocess.run([os.path.join(BIN, "ansible-doc"), "virtplane.kvm." + module], env=ENV,
                          capture_output=True, text=True, check=False)
    assert page.returncode == 0, page.stderr
    assert "OPTIONS" in page.stdout and "EXAMPLES" in page.stdout and "RETURN VALUES" in page.stdout
    assert "virtplane.kvm." + module in page.stdout


@pytest.mark.parametrize("kind, name", [("inventory", "engine"), ("lookup", "module_utils_zip"),
                                        ("lookup", "role_digest"), ("filter", "description_refs"),
                                        ("filter", "description_ready")])
def test_each_plugin_page_renders(kind, name):
    page = subprocess.run([os.path.join(BIN, "ansible-doc"), "-t", kind, "virtplane.kvm." + name], env=ENV,
                          capture_output=True, text=True, check=False)
    assert page.returncode == 0 and "ERROR" not in page.stderr, page.stderr
    assert "OPTIONS" in page.stdout or "Input" in page.stdout, page.stdout
    assert "EXAMPLES" in page.stdout and "virtplane.kvm." + name in page.stdout


def test_action_group_holds_every_engine_module():
    with open(os.path.join(ROOT, "meta", "runtime.yml")) as handle:
        group = yaml.safe_load(handle)["action_groups"]["engine"]
    # engine_database logs in as the PostgreSQL superuser, not with the engine connection; host_state and
    # client_files are the roles' bookkeeping on a host and on the controller, with no engine at all
    assert sorted(group) == [m for m in MODULES if m not in ("engine_database", "host_state", "client_files")]
    for module in MODULES:
        with open(os.path.join(ROOT, "plugins", "modules", module + ".py")) as handle:
            takes_engine = "\n  - virtplane.kvm.engine\n" in handle.read()
        assert takes_engine == (module in group), module


def test_galaxy_build_makes_a_tarball(tmp_path):
    subprocess.run([os.path.join(BIN, "ansible-galaxy"), "collection", "build", "--output-path", str(tmp_path), ROOT],
                   env=ENV, check=True, capture_output=True)
    [tarball] = list(tmp_path.iterdir())
    assert tarball.name.startswith("virtplane-kvm-")
    with tarfile.open(tarball) as archive:
        names = archive.getnames()
    assert "plugins/modules/host.py" in names and "roles/engine/meta/argument_specs.yml" in names
    assert not [n for n in names if n.startswith((".venv", "build/", "tests/output"))]
