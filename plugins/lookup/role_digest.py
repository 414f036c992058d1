# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: role_digest
author: virtplane.kvm maintainers (@virtplane)
short_description: A digest of a role's inputs and of the files it ships
version_added: 0.6.0
description:
  - Returns the SHA-256 of the files under the paths given (a role's folder, a file it copies to hosts) and of
    the values of the role's inputs - the variables its C(meta/argument_specs.yml) (entry point C(main)) and
    C(defaults/main.yml) name that start with O(prefix) - as this host sees them.
  - Any change of an input, of a template or task, or of a file the role copies gives another digest.
    M(virtplane.kvm.host_state) keeps it beside what a role set up, so that a later run with the same digest
    may skip the role's tasks when nothing else changed either.
options:
  _terms:
    description:
      - Files and folders whose content counts; the first is the role's folder, where the names of its inputs
        are read. Python caches are left out.
    type: list
    elements: path
    required: true
  prefix:
    description:
      - The prefix of the role's input variables.
    type: str
    required: true
  exclude:
    description:
      - Inputs left out, the secrets and the values that do not change what the role sets up on the host (they
        never reach the digest, nor the record).
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Tell whether the host still holds what the role set up
  virtplane.kvm.host_state:
    path: /var/lib/virtplane/role-state/myrole.json
    digest: "{{ lookup('virtplane.kvm.role_digest', role_path, prefix='myrole_', exclude=['myrole_password']) }}"
  register: myrole_state
"""

RETURN = r"""
_raw:
  description: The digest, 64 hex digits.
  type: list
  elements: str
"""

import hashlib
import json
import os

import yaml
from ansible.errors import AnsibleError, AnsibleUndefinedVariable
from ansible.plugins.lookup import LookupBase


def _tree(digest, path):
    """Add every file under `path` (sorted, Python caches left out) to `digest`."""
    if os.path.isfile(path):
        files = [(os.path.basename(path), path)]
    elif os.path.isdir(path):
        files = []
        for directory, subdirs, names in os.walk(path):
            subdirs[:] = sorted(d for d in subdirs if d != "__pycache__")
            files += [(os.path.relpath(os.path.join(directory, n), path), os.path.join(directory, n))
                      for n in names if not n.endswith(".pyc")]
        files.sort()
    else:
        raise AnsibleError("role_digest: %s is neither a file nor a folder" % path)
    for name, full in files:
        digest.update(b"file\0%s\0" % name.encode())
        with open(full, "rb") as handle:
            digest.update(hashlib.sha256(handle.read()).digest())


def input_names(role_dir, prefix):
    """The role's input variables: the options of its entry point main and its defaults, with `prefix`."""
    names = set()
    specs = os.path.join(role_dir, "meta", "argument_specs.yml")
    if os.path.isfile(specs):
        with open(specs) as handle:
            data = yaml.safe_load(handle) or {}
        names.update(((data.get("argument_specs") or {}).get("main") or {}).get("options") or {})
    defaults = os.path.join(role_dir, "defaults", "main.yml")
    if os.path.isfile(defaults):
        with open(defaults) as handle:
            names.update(yaml.safe_load(handle) or {})
    return sorted(n for n in names if isinstance(n, str) and n.startswith(prefix))


class LookupModule(LookupBase):

    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        prefix = self.get_option("prefix")
        exclude = set(self.get_option("exclude"))
        if not terms:
            raise AnsibleError("role_digest: give the role's folder first")
        digest = hashlib.sha256()
        for term in terms:
            _tree(digest, term)
        variables = variables or {}
        values = {}
        if not os.path.isdir(terms[0]):
            raise AnsibleError("role_digest: the first path must be the role's folder, not %s" % terms[0])
        for name in input_names(terms[0], prefix):
            if name in exclude or name not in variables:
                continue
            try:
                values[name] = self._templar.template(variables[name])
            except AnsibleUndefinedVariable:
                values[name] = "<undefined>"  # an input this host does not use (no engine group, for one)
        digest.update(json.dumps(values, sort_keys=True, default=str).encode())
        return [digest.hexdigest()]
