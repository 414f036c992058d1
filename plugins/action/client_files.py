# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Files of a host, and files of given content, kept in one directory of the controller, in one task."""
from __future__ import annotations

import base64
import os
import re
import tempfile

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

MODE = re.compile(r"0?[0-7]{3}")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
SPEC = dict(
    dir=dict(type="str", required=True),
    fetch=dict(type="list", elements="dict", default=[], options=dict(
        src=dict(type="str", required=True), name=dict(type="str", required=True),
        mode=dict(type="str", default="0600"))),
    content=dict(type="list", elements="dict", default=[], options=dict(
        name=dict(type="str", required=True), content=dict(type="str", required=True),
        mode=dict(type="str", default="0600"))),
)


def _write(path, data, mode):
    """Replace ``path`` with ``data`` in one step, with ``mode`` from the start."""
    fd, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".client-files-")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def _current(path):
    try:
        with open(path, "rb") as handle:
            return handle.read(), os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        return None, None


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _requires_connection = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        validated = ArgumentSpecValidator(SPEC).validate(self._task.args)
        if validated.error_messages:
            raise AnsibleActionFail("client_files: %s" % "; ".join(validated.error_messages))
        args = validated.validated_parameters
        directory = args["dir"]
        if not os.path.isabs(directory) or re.search(r"[\x00-\x1f\x7f]", directory) \
                or re.search(r"//|/\.\.?(/|$)", directory):
            raise AnsibleActionFail("client_files: dir %r must be an absolute path on the controller" % directory)
        names = [item["name"] for item in args["fetch"] + args["content"]]
        bad = [n for n in names if not NAME.fullmatch(n)]
        if bad or len(set(names)) != len(names):
            raise AnsibleActionFail("client_files: file names must be plain names (letters, digits, . _ -), each "
                                    "once: %s" % ", ".join(repr(n) for n in (bad or names)))
        bad = [i["mode"] for i in args["fetch"] + args["content"] if not MODE.fullmatch(i["mode"])]
        if bad:
            raise AnsibleActionFail("client_files: modes must be octal strings such as '0600': %s" % bad)

        bad = [i["src"] for i in args["fetch"] if not os.path.isabs(i["src"]) or "\n" in i["src"]]
        if bad:
            raise AnsibleActionFail("client_files: src must be absolute paths on the host: %s" % bad)

        # read everything first: a host that cannot give a file leaves the controller as it was
        wanted, unread = [], []
        for item in args["fetch"]:
            read = self._execute_module(module_name="ansible.legacy.slurp", module_args={"src": item["src"]},
                                        task_vars=task_vars)
            if read.get("failed") and self._task.check_mode:
                # a check before the host has the file (a new engine): it is to be fetched
                unread.append(os.path.join(directory, item["name"]))
                continue
            if read.get("failed"):
                raise AnsibleActionFail("client_files: cannot read %s on %s: %s" % (
                    item["src"], task_vars.get("inventory_hostname"), read.get("msg", "")))
            wanted.append((item["name"], base64.b64decode(read["content"]), int(item["mode"], 8)))
        wanted += [(item["name"], item["content"].encode(), int(item["mode"], 8)) for item in args["content"]]

        changed = list(unread)
        if not os.path.isdir(directory):
            changed.append(directory)
            if not self._task.check_mode:
                os.makedirs(directory, mode=0o700)
        elif os.stat(directory).st_mode & 0o7777 != 0o700:
            changed.append(directory)
            if not self._task.check_mode:
                os.chmod(directory, 0o700)
        for name, data, mode in wanted:
            path = os.path.join(directory, name)
            current, current_mode = _current(path) if os.path.isdir(directory) else (None, None)
            if current == data and current_mode == mode:
                continue
            changed.append(path)
            if self._task.check_mode:
                continue
            if current == data:
                os.chmod(path, mode)
            else:
                _write(path, data, mode)
        result.update(changed=bool(changed), dir=directory, changed_files=changed)
        return result
