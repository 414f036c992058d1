# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: module_utils_zip
author: virtplane.kvm maintainers (@virtplane)
short_description: The collection's module_utils packed as one zip on the controller
version_added: 0.6.0
description:
  - Packs the Python files of the named packages of this collection's C(plugins/module_utils) into one zip
    file in Ansible's temporary directory on the controller and returns its path, for
    M(ansible.builtin.copy) to place on a host in one task.
  - The zip is importable with the zip on C(PYTHONPATH), as
    C(ansible_collections.virtplane.kvm.plugins.module_utils.*).
  - The same files give a zip with the same bytes (sorted entries, fixed timestamps, no compression), so a
    copy of an unchanged zip reports no change.
  - The engine role ships the monitor service's code this way.
options:
  _terms:
    description:
      - Packages under C(plugins/module_utils) to include, each with its own Python files only; the empty
        string names the folder itself.
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: The monitor's code, as one file
  ansible.builtin.copy:
    src: "{{ lookup('virtplane.kvm.module_utils_zip', '', 'engine', 'services') }}"
    dest: /usr/lib/virtplane/virtplane-module-utils.zip
    mode: "0644"
"""

RETURN = r"""
_raw:
  description: The path of the zip on the controller.
  type: list
  elements: path
"""

import hashlib
import os
import re
import zipfile

from ansible import constants as C
from ansible.errors import AnsibleError
from ansible.plugins.lookup import LookupBase

PREFIX = "ansible_collections/virtplane/kvm/plugins/module_utils"
PACKAGE = re.compile(r"(?:[a-z_][a-z0-9_]*)?")
EPOCH = (1980, 1, 1, 0, 0, 0)


def _entry(zf, name, data):
    info = zipfile.ZipInfo(name, date_time=EPOCH)
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_STORED
    zf.writestr(info, data)


def build(packages, source, directory):
    """Write the zip of `packages` of the module_utils folder `source` into `directory`; return its path."""
    files = []
    for package in packages:
        if not isinstance(package, str) or not PACKAGE.fullmatch(package):
            raise AnsibleError("module_utils_zip: %r is not a package name of module_utils" % (package,))
        folder = os.path.join(source, package) if package else source
        if not os.path.isdir(folder):
            raise AnsibleError("module_utils_zip: module_utils has no package %r" % package)
        for name in sorted(os.listdir(folder)):
            if name.endswith(".py") and os.path.isfile(os.path.join(folder, name)):
                with open(os.path.join(folder, name), "rb") as f:
                    files.append(("/".join(p for p in (PREFIX, package, name) if p), f.read()))
    # the folders above module_utils are namespace packages in a collection; in the zip they are regular
    # ones, which every Python's zipimport finds
    parts = PREFIX.split("/")
    inits = ["/".join(parts[:i] + ["__init__.py"]) for i in range(1, len(parts) + 1)]
    entries = dict((name, b"") for name in inits)
    entries.update(files)
    digest = hashlib.sha256()
    for name in sorted(entries):
        digest.update(name.encode() + b"\0" + hashlib.sha256(entries[name]).digest())
    path = os.path.join(directory, "virtplane-module-utils-%s.zip" % digest.hexdigest()[:16])
    if not os.path.exists(path):
        partial = path + ".%d" % os.getpid()
        with zipfile.ZipFile(partial, "w") as zf:
            for name in sorted(entries):
                _entry(zf, name, entries[name])
        os.replace(partial, path)
    return path


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        source = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "module_utils")
        packages = []
        for term in terms:
            packages.extend(term if isinstance(term, list) else [term])
        return [build(packages, source, C.DEFAULT_LOCAL_TMP)]
