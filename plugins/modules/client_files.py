#!/usr/bin/python
# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# The work is done by the action plugin of the same name, on the controller; this file documents it.
from __future__ import annotations

DOCUMENTATION = r"""
module: client_files
short_description: Keep files of a host, and files of given content, in a directory on the controller
version_added: 0.6.0
description:
  - Reads the files O(fetch) names on the host and writes them, with the files of O(content), into O(dir) on the
    controller, in one task - the engine role's C(client) tasks keep the engine's CA certificate, its password
    and the inventory plugin's configuration this way.
  - O(dir) is made with mode 0700 (or set to it) before any file is written; each file is written in one step
    with its mode from the start, and only when its content or mode differs.
  - Every file is read from the host before anything is written on the controller, so that a file the host
    cannot give leaves the controller as it was.
  - The content of the files never shows in the task's result.
  - In check mode nothing is written; a file the host does not have yet is reported as to be fetched.
author: virtplane.kvm maintainers (@virtplane)
options:
  dir:
    description:
      - Absolute path of the directory on the controller.
    type: str
    required: true
  fetch:
    description:
      - Files to read on the host.
    type: list
    elements: dict
    default: []
    suboptions:
      src:
        description: Absolute path of the file on the host.
        type: str
        required: true
      name:
        description: Its name in O(dir) (letters, digits, C(.), C(_), C(-)).
        type: str
        required: true
      mode:
        description: Its mode on the controller, an octal string.
        type: str
        default: "0600"
  content:
    description:
      - Files written from the content given.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Its name in O(dir) (letters, digits, C(.), C(_), C(-)).
        type: str
        required: true
      content:
        description: What the file holds.
        type: str
        required: true
      mode:
        description: Its mode on the controller, an octal string.
        type: str
        default: "0600"
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
attributes:
  action:
    support: full
  async:
    support: none
  bypass_host_loop:
    support: none
  platform:
    platforms: posix
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: The engine's CA certificate, its password and a file of this controller's own
  virtplane.kvm.client_files:
    dir: /root/.virtplane/engine1
    fetch:
      - {src: /etc/virtplane/pki/cacert.pem, name: cacert.pem, mode: "0644"}
      - {src: /etc/virtplane/engine-db/password, name: password}
    content:
      - {name: notes.txt, content: "engine1\n"}
"""

RETURN = r"""
dir:
  description: The directory on the controller.
  returned: always
  type: str
changed_files:
  description: The directory and the files that were (in check mode, would be) written or given their mode.
  returned: always
  type: list
  elements: str
"""
