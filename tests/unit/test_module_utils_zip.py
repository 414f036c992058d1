"""The monitor's code as one zip: the same files give the same bytes, and Python imports the monitor from it."""

import os
import subprocess
import sys
import zipfile

import pytest
from ansible.errors import AnsibleError

from ansible_collections.virtplane.kvm.plugins.lookup.module_utils_zip import build

SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                      "plugins", "module_utils")
PACKAGES = ["", "engine", "fence", "scheduler", "services", "virt"]


def test_the_same_files_give_the_same_zip_and_the_monitor_imports_from_it(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = build(PACKAGES, SOURCE, str(tmp_path / "a"))
    second = build(PACKAGES, SOURCE, str(tmp_path / "b"))
    with open(first, "rb") as a, open(second, "rb") as b:
        assert a.read() == b.read()
    assert os.path.basename(first) == os.path.basename(second)
    names = zipfile.ZipFile(first).namelist()
    assert "ansible_collections/virtplane/kvm/plugins/module_utils/services/_monitor.py" in names
    assert not [n for n in names if not n.endswith(".py")]
    # the monitor's module and everything it imports of the collection come from the zip alone
    probe = ("import sys\nfrom ansible_collections.virtplane.kvm.plugins.module_utils.services import _monitor\n"
             "mods = [m.__file__ for n, m in list(sys.modules.items()) if n.startswith('ansible_collections')"
             " and getattr(m, '__file__', None)]\nassert mods and all(f.startswith(sys.argv[1]) for f in mods), mods\n"
             "print(_monitor.main.__module__)")
    out = subprocess.run([sys.executable, "-c", probe, first], env={"PYTHONPATH": first, "PATH": os.environ["PATH"]},
                         cwd=str(tmp_path), capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ansible_collections.virtplane.kvm.plugins.module_utils.services._monitor"


def test_a_changed_file_gives_another_zip(tmp_path):
    source = tmp_path / "module_utils"
    (source / "engine").mkdir(parents=True)
    (source / "engine" / "a.py").write_text("A = 1\n")
    before = build(["", "engine"], str(source), str(tmp_path))
    (source / "engine" / "a.py").write_text("A = 2\n")
    after = build(["", "engine"], str(source), str(tmp_path))
    assert before != after
    changed = "ansible_collections/virtplane/kvm/plugins/module_utils/engine/a.py"
    assert zipfile.ZipFile(after).read(changed) == b"A = 2\n"


@pytest.mark.parametrize("package", ["../engine", "engine/../..", "/etc", "nope"])
def test_a_package_outside_module_utils_is_refused(tmp_path, package):
    with pytest.raises(AnsibleError, match="module_utils"):
        build([package], SOURCE, str(tmp_path))
