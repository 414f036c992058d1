# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: console
author: virtplane.kvm maintainers (@virtplane)
short_description: Run commands in a VM through its interactive serial console
version_added: 0.6.0
description:
  - Reaches a VM that has no address Ansible can reach (no guest agent, no route to its network) through the
    interactive console the engine gives every VM with a serial console - a virtio-serial port named
    C(org.virtplane.console), opened with libvirt from the controller on the host the VM runs on (the serial port
    itself stays the VM's console log).
  - The guest must run a shell on that port (the lab's guest image does; on another guest, a service that runs
    C(sh) on C(/dev/virtio-ports/org.virtplane.console) whenever the port opens). Each command's standard output,
    standard error and exit status are returned apart.
  - Commands only - the M(ansible.builtin.raw) module, and facts gathering off. Files are not copied, so modules that
    need Python on the guest do not run through it.
  - The P(virtplane.kvm.engine#inventory) inventory plugin sets O(libvirt_uri) and O(domain) for each VM on a
    host, and with its O(virtplane.kvm.engine#inventory:console) option makes this the connection of each VM that
    is Up and whose address it does not know.
  - One console session per VM at a time; a second one is refused while the first is open.
  - A command that runs past O(command_timeout) fails, and its session is closed; the command itself goes on in the
    guest, and the next session's shell starts when it ends.
options:
  libvirt_uri:
    description:
      - The libvirt URI of the host the VM runs on, as this controller reaches it (the engine's URI of the host).
      - Required; refused, with what sets it, when missing.
    type: str
    vars:
      - name: ansible_virtplane_libvirt_uri
  domain:
    description: The VM's libvirt domain name (its name in the engine); the inventory host's address by default.
    type: str
    vars:
      - name: ansible_virtplane_domain
  command_timeout:
    description: Seconds a command may take before the console session is closed and the command fails.
    type: int
    default: 30
    vars:
      - name: ansible_virtplane_command_timeout
notes:
  - The console is a root shell for whoever can open the domain's console through libvirt; on a production host
    libvirt's own access control (TLS client certificates, polkit) decides who can.
"""

EXAMPLES = r"""
# ansible -i engine.virtplane.yml gs1 -m ansible.builtin.raw -a 'uname -a'
- name: Ask a VM for its kernel, through its serial console
  hosts: virtplane_vms
  gather_facts: false
  vars:
    ansible_connection: virtplane.kvm.console
  tasks:
    - name: Its kernel
      ansible.builtin.raw: uname -r
      register: kernel
      changed_when: false
"""

import base64
import re
import threading
import uuid

from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.module_utils.common.text.converters import to_bytes, to_native
from ansible.plugins.connection import ConnectionBase

try:
    import libvirt
except ImportError:  # pragma: no cover - reported when the connection is used
    libvirt = None

# the virtio-serial port the engine gives a VM with a serial console (virt/_domain.py CONSOLE_CHANNEL)
CHANNEL = "org.virtplane.console"
# the command goes to the guest in lines of this length at most
CHUNK = 2000
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# what follows the marker: rc, stdout and stderr (base64), :END
_RESULT = re.compile(rb"(\d{1,3}):([A-Za-z0-9+/=]*):([A-Za-z0-9+/=]*):END")
UNDELIVERED = "virtplane.kvm.console: the command did not reach the guest whole"


class Connection(ConnectionBase):
    transport = "virtplane.kvm.console"
    has_pipelining = False
    # the guest's shell is busybox or another POSIX sh: no python, no temporary directory of Ansible's
    module_implementation_preferences = ("",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._conn = None
        self._stream = None
        self._buffer = b""

    def _connect(self):
        if self._connected:
            return self
        if libvirt is None:
            raise AnsibleError("virtplane.kvm.console needs libvirt-python on the controller")
        uri = self.get_option("libvirt_uri")
        domain = self.get_option("domain") or self._play_context.remote_addr
        if not uri:
            raise AnsibleConnectionFailure("virtplane.kvm.console: no libvirt URI for %s (ansible_virtplane_libvirt_uri"
                                           "; the engine inventory sets it for a VM on a host)" % domain)
        if not isinstance(domain, str) or not _NAME.fullmatch(domain):
            raise AnsibleConnectionFailure("virtplane.kvm.console: %r is not a VM name" % (domain,))
        try:
            self._conn = libvirt.open(uri)
            dom = self._conn.lookupByName(domain)
            self._stream = self._conn.newStream(0)
            dom.openChannel(CHANNEL, self._stream, 0)
        except libvirt.libvirtError as exc:
            self.close()
            raise AnsibleConnectionFailure("virtplane.kvm.console: cannot open the serial console of %s: %s"
                                           % (domain, to_native(exc.get_error_message())))
        self._connected = True
        return self

    def _send(self, text):
        data = to_bytes(text)
        while data:
            sent = self._stream.send(data)
            if sent < 0:
                raise libvirt.libvirtError("the console stopped taking input")
            data = data[sent:]

    def _read_until(self, prefix, suffix):
        """Read the console until a line from ``prefix`` to ``suffix`` came; that line. Each read looks at what is
        new only, so a command's output of many megabytes costs no more than reading it."""
        start = end = None
        scanned = 0
        while True:
            if start is None:
                start = self._buffer.find(prefix, max(0, scanned - len(prefix)))
                start = None if start < 0 else start
                scanned = len(self._buffer)
            if start is not None:
                end = self._buffer.find(suffix, max(start, (end or start) - len(suffix)))
                if end >= 0:
                    line = self._buffer[start:end + len(suffix)]
                    self._buffer = self._buffer[end + len(suffix):]
                    return line
                end = len(self._buffer)
            data = self._stream.recv(65536)
            if data in (-2, None):
                continue
            if not data:
                raise EOFError()
            self._buffer += data

    def _abort(self):
        stream = self._stream
        if stream is None:
            return
        try:
            stream.abort()
        except libvirt.libvirtError:  # the stream may be gone already
            pass

    def exec_command(self, cmd, in_data=None, sudoable=True):
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        if in_data is not None:
            raise AnsibleError("virtplane.kvm.console takes no input (no pipelining)")
        self._connect()
        self._display.vvv("CONSOLE EXEC %s" % cmd, host=self._play_context.remote_addr)
        marker = uuid.uuid4().hex
        script = base64.b64encode(to_bytes(cmd)).decode("ascii")
        # in a directory of its own that only root reads (mktemp makes it 0700); the command goes there in pieces,
        # base64 (no quoting, any byte), and runs only if it arrived whole; the marker is written split in two, so
        # that only its output matches, never the line that asks for it (should a guest's port echo)
        lines = ["vp=$(mktemp -d /tmp/virtplane-console.XXXXXX) || vp=/nonexistent"]
        lines += ['echo %s >>"$vp/cmd.b64"' % script[i:i + CHUNK] for i in range(0, len(script), CHUNK)]
        lines.append('if base64 -d "$vp/cmd.b64" >"$vp/cmd" 2>/dev/null; then sh "$vp/cmd" </dev/null >"$vp/out"'
                     ' 2>"$vp/err"; rc=$?; else rc=255; echo "%s" >"$vp/err"; fi; echo "VP""C-%s:$rc:'
                     '$(base64 "$vp/out" 2>/dev/null | tr -d \'\\n\'):$(base64 "$vp/err" 2>/dev/null | tr -d \'\\n\')'
                     ':END"; rm -rf "$vp"' % (UNDELIVERED, marker))
        self._buffer = b""
        timeout = self.get_option("command_timeout")
        # one deadline for sending and reading: a guest that reads nothing blocks the sending too
        expired = threading.Event()
        timer = threading.Timer(timeout, lambda: (expired.set(), self._abort()))
        timer.start()
        try:
            self._send("\n".join(lines) + "\n")
            line = self._read_until(b"VPC-" + marker.encode() + b":", b":END")
        except (libvirt.libvirtError, EOFError) as exc:
            # the session is over: the next command opens another one (and the guest's shell ends)
            self.close()
            if expired.is_set():
                raise AnsibleError("virtplane.kvm.console: the command did not finish within %d s (a guest that runs "
                                   "no shell on its %s port never answers)" % (timeout, CHANNEL))
            if isinstance(exc, EOFError):
                raise AnsibleConnectionFailure("virtplane.kvm.console: the console closed (the VM stopped?)")
            raise AnsibleConnectionFailure("virtplane.kvm.console: %s" % to_native(exc.get_error_message()))
        finally:
            timer.cancel()
        found = _RESULT.fullmatch(line[len(b"VPC-") + len(marker) + 1:])
        if not found:
            raise AnsibleError("virtplane.kvm.console: the guest's answer is not one this connection reads")
        return int(found.group(1)), base64.b64decode(found.group(2)), base64.b64decode(found.group(3))

    def put_file(self, in_path, out_path):
        super().put_file(in_path, out_path)
        raise AnsibleError("virtplane.kvm.console copies no files: run commands (ansible.builtin.raw) only")

    def fetch_file(self, in_path, out_path):
        super().fetch_file(in_path, out_path)
        raise AnsibleError("virtplane.kvm.console copies no files: run commands (ansible.builtin.raw) only")

    def close(self):
        if self._stream is not None:
            try:
                self._stream.finish()
            except libvirt.libvirtError:  # closing what may be closed already
                self._abort()
            self._stream = None
        if self._conn is not None:
            try:
                self._conn.close()
            except libvirt.libvirtError:
                pass
            self._conn = None
        self._connected = False
