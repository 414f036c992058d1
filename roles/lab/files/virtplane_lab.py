# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Turn this Linux machine into N lab hosts that are whole Debian machines, or remove them.

Each lab host is a machine of its own on this one:
- its own root filesystem: a copy-on-write overlay (STATE_DIR/hosts/<name>/upper) on one Debian
  bookworm base root that the lab builds once with debootstrap (STATE_DIR/base/<recipe hash>, built
  again when its recipe changes);
- booted with systemd as PID 1 of its own PID, mount, UTS, IPC and cgroup namespaces, in its own
  network namespace with `eth0` (a veth into the lab bridge) on the management subnet and `eth1` (a
  veth into the second lab bridge) as the "physical" NIC for guest networks and storage; a host named
  in --without-systemd boots a minimal init instead (sshd only), as a container has none;
- its own /dev (the devices a hypervisor needs: kvm, net/tun, vhost-net, ...), its own hostname,
  machine id, SSH host key, and root's authorized_keys holding the lab key, so Ansible manages it
  over SSH like a real host; packages come with apt, through a small proxy the lab runs on the
  management bridge (<gateway>:3142) that relays to the Debian mirror only and serves the packages
  this machine already has from its own apt cache;
- the lab's shared directory bound at the same path in every host (shared storage, lockspace).
With --engine, a host named `engine1` at .10 of the management subnet is made the same way, for the
engine role (PostgreSQL under systemd).

The lab's shared block storage is a userspace iSCSI target (tgt): one tgtd in a network namespace
of its own (<prefix>-storage) at .2 of the data subnet, exporting one target with --luns LUNs
backed by sparse files in STATE_DIR/iscsi (kept across `up` runs, removed by `down`). Every lab
host reaches it over its eth1, e.g. with libvirt's `iscsi-direct` pool.

A host stops as a machine does: `systemctl poweroff` (SIGRTMIN+4 to its systemd), then whatever is
left in it is killed after --stop-timeout seconds. A host that died (its processes were killed, or
this machine rebooted) is booted again from its own root by the next `up`, with what was installed
and configured in it.

The lab's power controller (the proxy's process, <gateway>:3143) is the lab hosts' BMC: it speaks the part
of Redfish a fence agent uses - GET /redfish/v1/Systems/<host> (PowerState On/Off) and POST
/redfish/v1/Systems/<host>/Actions/ComputerSystem.Reset with ResetType ForceOff, which kills every process of
the host (SIGKILL to PID 1 of its PID namespace) - with HTTP basic authentication (user root, the password in
STATE_DIR/power.secret, mode 0600). It answers over HTTPS on port 3144 too, with a certificate of its own
(STATE_DIR/power.pem), for the fence-agents' fence_redfish, which speaks nothing else. Hosts are powered on
again by `up`.

Everything the lab creates is recorded in STATE_DIR/lab.json, and nothing else is touched: a
bridge, namespace or directory of the same name that the lab did not create is refused.
Output: one JSON object on stdout {"changed", "actions", "hosts", ...}; exit 1 with
{"failed": true, "msg"} on error. `--check` predicts without changing anything.
"""

import argparse
import base64
import contextlib
import fcntl
import hashlib
import hmac
import http.client
import http.server
import ipaddress
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import socketserver
import ssl
import stat
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid

MARKER = ".virtplane-lab"
NAME = re.compile(r"[a-z][a-z0-9-]{0,9}")
# The lab's iSCSI target is <IQN_PREFIX>:<lab prefix>; lab hosts name their initiators <IQN_PREFIX>:<host>.
IQN_PREFIX = "iqn.2026-11.dev.virtplane.lab"
ISCSI_PORT = 3260
MAX_LUNS = 32
SIZE = re.compile(r"([0-9]+) *([KMGT]?)(?:i?B)?", re.IGNORECASE)
ENGINE_HOST = "engine1"
# in a host's directory once its root is whole
ROOT_MADE = "root-made"
MIB = 1024 ** 2

# --- the base root ----------------------------------------------------------------------
SUITE = "bookworm"
BASE_PACKAGES = ["systemd", "systemd-sysv", "dbus", "python3", "openssh-server", "iproute2", "procps"]
# Disk a new base root and a new host take (the host: the hypervisor packages it installs, its logs).
BASE_MIB = 700
HOST_MIB = 900
# A mirror is a plain http:// URL of a host name or address (apt checks the signatures, not the transport).
MIRROR = re.compile(r"http://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?")
PROXY_PORT = 3142
POWER_PORT = 3143
POWER_SECRET = "power.secret"
POWER_TLS_PORT = 3144
POWER_CERT = "power.pem"  # the power controller's key and self-signed certificate, for its HTTPS port
# What one lab keeps for the next lab of this machine (another state directory, or this one made
# again): base roots (base/<recipe hash>, the BASE_CACHE_KEEP most recently used) and the packages the
# hosts downloaded through the proxy (apt/, each dropped when no lab asked for it in PACKAGE_CACHE_DAYS).
CACHE_DIR = "/var/cache/virtplane-lab"
BASE_CACHE_KEEP = 2
PACKAGE_CACHE_DAYS = 60
# What the base root gets after debootstrap (run in a chroot, with the mirrors as $1 and $2). It is
# part of the recipe: changing it builds a new base root, and the hosts made on the old one are made again.
BASE_SETUP = r"""
mirror=$1 security=$2 suite=$3
rm -f /etc/apt/sources.list
cat > /etc/apt/sources.list.d/debian.sources <<EOF
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
# lab hosts install no Recommends, as minimal images do: the roles must name every package they need
printf 'APT::Install-Recommends "false";\n' > /etc/apt/apt.conf.d/90virtplane-lab
apt-get -q update
apt-get clean
# each host its own identity: machine id, SSH host key
rm -f /etc/ssh/ssh_host_*
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
cat > /etc/ssh/sshd_config.d/virtplane-lab.conf <<EOF
# lab host: reachable with the lab key only
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
EOF
# lab hosts have no DNS: a host resolves its own name from /etc/hosts, the proxy resolves the mirror
printf '# lab hosts have no DNS\n' > /etc/resolv.conf
# the journal survives a host's death: the lab reads its last lines when a host does not boot
mkdir -p /var/log/journal /etc/systemd/journald.conf.d
printf '[Journal]\nSystemMaxUse=32M\n' > /etc/systemd/journald.conf.d/virtplane-lab.conf
# hosts refresh their package lists when told to, not at random times
systemctl mask apt-daily.timer apt-daily-upgrade.timer >/dev/null 2>&1 || true
"""
# A host without systemd runs this as PID 1: sshd, and nothing else (the roles start their daemons),
# reaping orphans; SIGTERM is its power-off.
MINIMAL_INIT = r"""#!/usr/bin/python3
# PID 1 of a lab host without systemd (virtplane.kvm lab): sshd only; SIGTERM powers the host off.
import os, signal, subprocess, time
os.makedirs("/run/sshd", 0o755, exist_ok=True)
def power_off(*_args):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(-1, sig)
        except ProcessLookupError:
            pass
        time.sleep(2)
    os._exit(0)
signal.signal(signal.SIGTERM, power_off)
sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e"])
while True:
    try:
        pid, _status = os.wait()
    except ChildProcessError:
        pid = 0
        time.sleep(1)
    if pid == sshd.pid:
        time.sleep(1)
        sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e"])
"""
# Devices a lab host gets in its own /dev (those this machine has): what systemd, sshd, QEMU and
# libvirt use. Everything else of this machine's /dev stays out of the hosts.
DEVICES = ["null", "zero", "full", "random", "urandom", "tty", "kvm", "net/tun", "vhost-net", "vhost-vsock",
           "fuse"]


class LabError(Exception):
    pass


def run(*argv, check=True, capture=True, env=None):
    proc = subprocess.run(argv, stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, check=False, env=env)
    if check and proc.returncode != 0:
        raise LabError("%s failed: %s" % (" ".join(argv), (proc.stderr or proc.stdout).strip()))
    return proc.stdout if capture else ""


def in_netns(pid, netns):
    """Whether ``pid`` lives in network namespace ``netns`` (a pid number alone may have been reused)."""
    try:
        return os.stat("/proc/%d/ns/net" % pid).st_ino == os.stat(os.path.join("/run/netns", netns)).st_ino
    except (OSError, TypeError):
        return False


def start_time(pid):
    """When process ``pid`` started (clock ticks since boot): with the pid, names one process for good."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, TypeError, IndexError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


def alive(pid, started):
    return bool(pid) and started is not None and start_time(pid) == started


def copy_tree(source, target):
    """``source`` copied to ``target`` as hard links (another file system: as a copy)."""
    proc = subprocess.run(["cp", "-a", "-l", source, target], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        shutil.rmtree(target, ignore_errors=True)
        run("cp", "-a", source, target)


def links():
    return {link["ifname"]: link for link in json.loads(run("ip", "-j", "link", "show") or "[]")}


def addresses():
    """Every IPv4 network configured on this machine (root namespace), by interface."""
    found = []
    for entry in json.loads(run("ip", "-j", "-4", "addr", "show") or "[]"):
        for info in entry.get("addr_info", []):
            found.append((entry["ifname"], ipaddress.ip_interface("%s/%s" % (info["local"], info["prefixlen"]))))
    return found


def namespaces():
    return set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()


def kill_netns(ns):
    """Kill every process in network namespace ``ns``, until none is left."""
    for _attempt in range(50):
        pids = [int(p) for p in run("ip", "netns", "pids", ns, check=False).split()]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


def parse_size(text):
    """Bytes from '1G', '512M', '1GiB' or a number of bytes (binary units)."""
    match = SIZE.fullmatch(str(text))
    if not match:
        raise LabError("LUN size '%s' is not a size such as 1G, 512M or a number of bytes" % text)
    size = int(match.group(1)) * 1024 ** " KMGT".index(match.group(2).upper() or " ")
    if size < 1024 ** 2 or size % 512:
        raise LabError("LUN size '%s' must be at least 1M and a multiple of 512 bytes" % text)
    return size


def memory_available_mib():
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    return 0


def free_mib(path):
    """Free space (MiB) of the filesystem that holds ``path``, or would hold it."""
    while not os.path.exists(path):
        path = os.path.dirname(path)
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize // MIB


def tail(path, lines=8):
    try:
        with open(path, errors="replace") as handle:
            return [line.rstrip() for line in handle.read().splitlines() if line.strip()][-lines:]
    except OSError:
        return []


def is_tgtd(pid, socket_path):
    """Whether ``pid`` is the tgtd that serves ``socket_path`` (a pid number alone may have been reused)."""
    try:
        with open("/proc/%d/comm" % pid) as handle:
            if handle.read().strip() != "tgtd":
                return False
        with open("/proc/%d/environ" % pid, "rb") as handle:
            return ("TGT_IPC_SOCKET=" + socket_path).encode() in handle.read().split(b"\0")
    except (OSError, TypeError):
        return False


def parse_targets(text):
    """`tgtadm --mode target --op show` as {target name: {"tid", "luns": {lun: backing path}, "acls"}}."""
    targets = {}
    current = section = lun = None
    for line in text.splitlines():
        match = re.match(r"^Target (\d+): (\S+)$", line)
        if match:
            current = targets[match.group(2)] = {"tid": int(match.group(1)), "luns": {}, "acls": []}
            section = lun = None
            continue
        if current is None or not line.strip():
            continue
        stripped = line.strip()
        if line.startswith("    ") and not line.startswith("     "):
            section = stripped
            continue
        if section == "LUN information:":
            match = re.match(r"^LUN: (\d+)$", stripped)
            if match:
                lun = int(match.group(1))
                current["luns"][lun] = None
            elif lun is not None and stripped.startswith("Backing store path:"):
                current["luns"][lun] = stripped.split(":", 1)[1].strip()
        elif section == "ACL information:":
            current["acls"].append(stripped)
    return targets


# --- cgroups ----------------------------------------------------------------------------
#
# systemd in a host manages the hierarchies it finds mounted in the host: the named `systemd` one
# (hybrid layout, as on this machine) and the unified one. It must see its own sub-cgroup of each as
# its root, else it makes init.scope and system.slice in this machine's own: the launcher moves itself
# into <hierarchy>/<current cgroup>/<netns name> before unsharing the cgroup namespace.

def cgroup_layout():
    """{"systemd": mount point or None, "unified": mount point or None} and this process's cgroups."""
    mounts = {"systemd": None, "unified": None}
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            sep = fields.index("-")
            fstype, options = fields[sep + 1], fields[sep + 3]
            if fstype == "cgroup2" and mounts["unified"] is None:
                mounts["unified"] = fields[4]
            elif fstype == "cgroup" and "name=systemd" in options.split(","):
                mounts["systemd"] = fields[4]
    current = {}
    with open("/proc/self/cgroup") as handle:
        for line in handle:
            _hid, controllers, path = line.rstrip("\n").split(":", 2)
            if controllers == "":
                current["unified"] = path
            elif controllers == "name=systemd":
                current["systemd"] = path
    return {key: (mount, current.get(key, "/")) for key, mount in mounts.items() if mount}


def remove_cgroup(path):
    """rmdir a cgroup and its children, deepest first; False while processes remain in it."""
    if not os.path.isdir(path):
        return True
    for _attempt in range(50):
        try:
            for current, dirs, _files in os.walk(path, topdown=False):
                for name in dirs:
                    os.rmdir(os.path.join(current, name))
            os.rmdir(path)
            return True
        except FileNotFoundError:
            continue
        except OSError:
            time.sleep(0.1)  # the last processes are still leaving
    return False


# --- the package proxy ------------------------------------------------------------------
#
# Lab hosts reach no network but the lab's. Their apt goes through this proxy on the management
# bridge: plain HTTP GET and HEAD to the Debian mirrors of the lab's base root, nothing else (no
# CONNECT, no other host, never an address of this machine's loopback). Packages (.deb) that this
# machine's apt cache or the lab's own cache hold are served from there; others are fetched once
# and kept in the lab's cache, so the second host installs what the first one fetched from disk.

DEB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+~_%-]*\.deb")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te",
              "trailers", "transfer-encoding", "upgrade"}
FORWARDED = {"accept", "accept-encoding", "cache-control", "if-modified-since", "if-none-match", "if-range",
             "range", "user-agent"}


class ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "virtplane-lab-proxy"
    timeout = 120

    def log_message(self, fmt, *args):
        self.server.log("%s %s" % (self.address_string(), fmt % args))

    def do_GET(self):  # noqa: N802 - the name http.server calls
        self._relay(body=True)

    def do_HEAD(self):  # noqa: N802
        self._relay(body=False)

    def do_CONNECT(self):  # noqa: N802
        self.send_error(405, "The lab's package proxy relays plain HTTP to the Debian mirror only")

    do_POST = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = do_CONNECT  # noqa: N815

    def _relay(self, body):
        try:
            url = urllib.parse.urlsplit(self.path)
            netloc = "%s:%d" % (url.hostname, url.port or 80) if url.hostname else ""
        except ValueError:  # a port that is no number, or out of range
            self.send_error(400, "Not a URL: %s" % self.path[:200])
            return
        if url.scheme != "http" or url.username is not None or netloc not in self.server.allowed:
            self.send_error(403, "Not a Debian mirror of this lab: %s" % self.path[:200])
            return
        name = urllib.parse.unquote(url.path.rsplit("/", 1)[-1])
        deb = DEB_NAME.fullmatch(name.replace(":", "%3a")) and url.path.endswith(".deb")
        if deb:
            # apt stores an epoch's ':' as %3a in its archive
            local = name.replace(":", "%3a")
            for directory in self.server.caches:
                path = os.path.join(directory, local)
                if os.path.isfile(path):
                    if directory == self.server.caches[0]:
                        with contextlib.suppress(OSError):
                            os.utime(path)  # used: kept in the cache
                    self._send_file(path, body)
                    return
        try:
            upstream = self._open_upstream(url)
        except (OSError, http.client.HTTPException, LabError) as exc:
            self.send_error(502, "The Debian mirror %s does not answer: %s" % (url.hostname, exc))
            return
        try:
            self._stream(upstream, body, os.path.join(self.server.caches[0], name.replace(":", "%3a"))
                         if deb and self.command == "GET" else None)
        finally:
            upstream.close()
            upstream.conn_to_close.close()

    def _open_upstream(self, url):
        for info in socket.getaddrinfo(url.hostname, url.port or 80, type=socket.SOCK_STREAM):
            address = ipaddress.ip_address(info[4][0])
            address = getattr(address, "ipv4_mapped", None) or address
            if address.is_loopback or address.is_link_local or address.is_unspecified:
                raise LabError("%s resolves to %s, which the proxy never reaches" % (url.hostname, address))
        conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=60)
        path = url.path or "/"
        if url.query:
            path += "?" + url.query
        headers = {k: v for k, v in self.headers.items() if k.lower() in FORWARDED}
        conn.request(self.command, path, headers=headers)
        response = conn.getresponse()
        response.conn_to_close = conn
        return response

    def _stream(self, response, body, keep):
        self.send_response(response.status, response.reason)
        length = response.getheader("Content-Length")
        for key, value in response.getheaders():
            if key.lower() not in HOP_BY_HOP:
                self.send_header(key, value)
        has_body = body and response.status not in (204, 304) and self.command != "HEAD"
        if has_body and length is None:
            self.send_header("Connection", "close")  # no length to tell the end of the body by
            self.close_connection = True
        self.end_headers()
        if not has_body:
            response.read()
            return
        partial = None
        if keep and response.status == 200 and length is not None:
            partial = "%s.partial-%d-%d" % (keep, os.getpid(), threading.get_ident())
        received = 0
        out = open(partial, "wb") if partial else None  # noqa: SIM115 - closed below, kept only when whole
        try:
            while True:
                chunk = response.read(65536)
                if not chunk:
                    break
                received += len(chunk)
                self.wfile.write(chunk)
                if out:
                    out.write(chunk)
        finally:
            if out:
                out.close()
                if received == int(length):
                    os.replace(partial, keep)
                else:
                    os.unlink(partial)

    def _send_file(self, path, body):
        size = os.path.getsize(path)
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.debian.binary-package")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        if body:
            with open(path, "rb") as handle:
                shutil.copyfileobj(handle, self.wfile, 65536)


class LoggingServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """A threaded HTTP server of the lab's that logs a timestamped line per request."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, log=None):
        self._log = log
        super().__init__(address, handler)

    def log(self, line):
        if self._log:
            self._log.write("%s %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), line))
            self._log.flush()


class PackageProxy(LoggingServer):
    def __init__(self, address, allowed, caches, log=None):
        self.allowed = set(allowed)
        self.caches = caches
        super().__init__(address, ProxyHandler, log)


class PowerHandler(http.server.BaseHTTPRequestHandler):
    """The lab hosts' power controller: Redfish's system power, as much of it as a fence agent uses."""

    protocol_version = "HTTP/1.1"
    server_version = "virtplane-lab-power"
    timeout = 30
    PREFIX = "/redfish/v1/Systems"

    def log_message(self, fmt, *args):
        self.server.log("power %s %s" % (self.address_string(), fmt % args))

    def _send(self, code, body=None):
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(code)
        if code == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="virtplane-lab"')
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self):
        try:
            with open(os.path.join(self.server.state_dir, POWER_SECRET)) as handle:
                secret = handle.read().strip()
        except OSError:
            return False
        header = self.headers.get("Authorization") or ""
        expected = "Basic " + base64.b64encode(("root:%s" % secret).encode()).decode()
        return bool(secret) and hmac.compare_digest(header.encode(), expected.encode())

    def _hosts(self):
        """The lab's hypervisor hosts by name: the systems this controller powers (never the engine)."""
        try:
            with open(os.path.join(self.server.state_dir, "lab.json")) as handle:
                hosts = json.load(handle).get("hosts") or []
        except (OSError, ValueError):
            return {}
        return {h.get("name"): h for h in hosts if h.get("role") != "engine"}

    def _host(self, name):
        return self._hosts().get(name)

    def _system(self):
        """The host a request names, or None once the answer (401, 404) is sent."""
        if not self._authorized():
            self._send(401, {"error": "authentication required"})
            return None, None
        rest = self.path.split("?", 1)[0][len(self.PREFIX):].strip("/").split("/")
        host = self._host(rest[0]) if rest and rest[0] else None
        if not self.path.startswith(self.PREFIX + "/") or host is None:
            self._send(404, {"error": "no such system"})
            return None, None
        return host, rest[1:]

    def do_GET(self):  # noqa: N802 - the name http.server calls
        if self.path.rstrip("/") in ("/redfish/v1", self.PREFIX):
            if not self._authorized():
                self._send(401, {"error": "authentication required"})
                return
            self._send(200, {"Systems": {"@odata.id": self.PREFIX}} if self.path.rstrip("/") == "/redfish/v1"
                       else {"Members": [{"@odata.id": "%s/%s" % (self.PREFIX, name)} for name in self._hosts()]})
            return
        host, rest = self._system()
        if host is None:
            return
        if rest:
            self._send(404, {"error": "no such resource"})
            return
        self._send(200, {"Id": host["name"], "PowerState": "On" if alive(host.get("pid"), host.get("started"))
                         else "Off", "Actions": {"#ComputerSystem.Reset": {
                             "target": "%s/%s/Actions/ComputerSystem.Reset" % (self.PREFIX, host["name"]),
                             "ResetType@Redfish.AllowableValues": ["ForceOff"]}}})

    def do_POST(self):  # noqa: N802
        host, rest = self._system()
        if host is None:
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(min(length, 4096)) or b"{}")
        except ValueError:
            body = {}
        if rest != ["Actions", "ComputerSystem.Reset"] or body.get("ResetType") != "ForceOff":
            self._send(400, {"error": "the lab powers hosts off only (ResetType ForceOff); its up action boots them"})
            return
        if alive(host.get("pid"), host.get("started")):
            os.kill(host["pid"], signal.SIGKILL)  # PID 1 of the host's PID namespace: every process of it goes
            deadline = time.time() + 10
            while alive(host.get("pid"), host.get("started")) and time.time() < deadline:
                time.sleep(0.05)
        self.server.log("power: %s is off" % host["name"])
        self._send(204)

    def do_PUT(self):  # noqa: N802
        self._send(405, {"error": "not supported"})

    do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_CONNECT = do_PUT  # noqa: N815


class PowerServer(LoggingServer):
    def __init__(self, address, state_dir, log=None, tls=False):
        self.state_dir = state_dir
        super().__init__(address, PowerHandler, log)
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            try:
                context.load_cert_chain(os.path.join(state_dir, POWER_CERT))
            except (OSError, ssl.SSLError) as exc:
                self.server_close()
                raise LabError("the power controller's certificate %s cannot be used: %s"
                               % (os.path.join(state_dir, POWER_CERT), exc))
            # the handshake happens in the request's thread: a client that never speaks holds up no other
            self.socket = context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def handle_error(self, request, client_address):
        failed = sys.exc_info()[1]
        if isinstance(failed, (ssl.SSLError, ConnectionError, TimeoutError)):
            # a client that spoke plain HTTP to the HTTPS port, refused the certificate or went away: a line
            self.log("power %s: %s" % (client_address[0], failed))
            return
        super().handle_error(request, client_address)


def power_servers(listen, port, tls_port, state_dir, log):
    """The power controller over HTTP, and over HTTPS when the lab has made its certificate; (server, reason)
    pairs, reason set when a port cannot be had."""
    servers = []
    for number, tls in ((port, False), (tls_port, True)):
        if tls and not os.path.exists(os.path.join(state_dir, POWER_CERT)):
            continue
        try:
            servers.append(PowerServer((listen, number), state_dir, log=log, tls=tls))
        except (OSError, LabError) as exc:
            for server in servers:
                server.server_close()
            if isinstance(exc, LabError):
                return None, str(exc)
            return None, "port %d of %s cannot be had: %s" % (number, listen, exc.strerror or exc)
    return servers, None


def make_power_cert(path, address):
    """A key and a self-signed certificate for ``address`` in one file (mode 0600), for the HTTPS port."""
    work = path + ".new"
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work, 0o700)
    try:
        run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-sha256", "-days", "3650", "-subj", "/CN=virtplane-lab-power", "-addext",
            "subjectAltName=IP:%s" % address, "-keyout", os.path.join(work, "key"), "-out", os.path.join(work, "crt"))
        descriptor = os.open(os.path.join(work, "pem"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            for part in ("key", "crt"):
                with open(os.path.join(work, part)) as piece:
                    handle.write(piece.read())
        os.replace(os.path.join(work, "pem"), path)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def serve_power(args):
    """`power`: the power controller alone (the lab runs it in the proxy's process), until killed; it writes
    the ports it serves on (HTTP, then HTTPS when it has a certificate) to STATE_DIR/power.ready."""
    servers, reason = power_servers(args.listen, args.port, args.tls_port, args.state_dir, sys.stdout)
    if reason:
        print(reason, flush=True)
        return 1
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, name="power-tls", daemon=True).start()
    # "<http port>" or "<http port> <https port>"
    with open(os.path.join(args.state_dir, "power.ready"), "w") as handle:
        handle.write(" ".join(str(server.server_address[1]) for server in servers))
    servers[0].serve_forever()
    return 0


def mirror_netlocs(*mirrors):
    found = []
    for mirror in mirrors:
        url = urllib.parse.urlsplit(mirror)
        found.append("%s:%d" % (url.hostname, url.port or 80))
    return found


def package_caches(args):
    """Where the proxy looks for a package before it asks the mirror; it keeps what it downloads in the
    first. This machine's own apt cache is read only."""
    return [os.path.join(args.cache_dir, "apt"), "/var/cache/apt/archives"]


def prune_package_cache(directory, days=PACKAGE_CACHE_DAYS):
    """Packages no lab asked for in ``days`` (a hit marks its file as used), and downloads a killed proxy
    left half-written."""
    if not os.path.isdir(directory):
        return
    old = time.time() - days * 86400
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        with contextlib.suppress(OSError):
            if os.stat(path).st_mtime < old or (".partial-" in name and os.stat(path).st_mtime < time.time() - 3600):
                os.unlink(path)


def serve_proxy(args):
    """`proxy`: the lab's package proxy, until killed (the lab starts it, records it and stops it)."""
    caches = package_caches(args)
    try:
        server = PackageProxy((args.listen, PROXY_PORT), mirror_netlocs(args.mirror, args.security_mirror), caches,
                              log=sys.stdout)
    except OSError as exc:
        print("port %d of %s cannot be had: %s" % (PROXY_PORT, args.listen, exc.strerror or exc), flush=True)
        return 1
    powers, reason = power_servers(args.listen, POWER_PORT, POWER_TLS_PORT, args.state_dir, sys.stdout)
    if reason:
        print(reason, flush=True)
        return 1
    for power in powers:
        threading.Thread(target=power.serve_forever, name="power", daemon=True).start()
    server.log("serving on %s:%d for %s; the power controller on port(s) %s" % (
        args.listen, PROXY_PORT, ", ".join(sorted(server.allowed)),
        ", ".join(str(power.server_address[1]) for power in powers)))
    # bound and about to serve: what the lab waits for (a connect alone could reach another program)
    with open(os.path.join(args.state_dir, "proxy.ready"), "w") as handle:
        handle.write(str(os.getpid()))
    server.serve_forever()
    return 0


@contextlib.contextmanager
def run_lock(state_dir):
    """One run at a time on a lab: two would race on its record and its namespaces."""
    if os.geteuid() != 0:  # refused by the lab, which needs root
        yield
        return
    name = hashlib.sha256(os.path.abspath(state_dir).encode()).hexdigest()[:16]
    os.makedirs("/run/lock", exist_ok=True)
    with open("/run/lock/virtplane-lab-%s.lock" % name, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise LabError("another run of the lab tool on %s is under way (pid %s)"
                           % (state_dir, handle.read().strip() or "unknown")) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield


# --- the lab ----------------------------------------------------------------------------

class Lab:
    def __init__(self, args):
        self.args = args
        self.state_dir = args.state_dir
        self.state_file = os.path.join(self.state_dir, "lab.json")
        self.check = args.check
        self.actions = []
        self.state = self._load()
        # False while the request is being checked (a refusal), True once the lab is being changed
        self.started = False
        # how each host this run stopped went down: "powered off", or killed when it did not in time
        self.stopped = {}

    # --- bookkeeping -------------------------------------------------------------------

    def _load(self):
        if not os.path.exists(self.state_file):
            return None
        with open(self.state_file) as handle:
            return json.load(handle)

    def _save(self):
        if self.check:
            return
        tmp = self.state_file + ".tmp"
        with open(tmp, "w") as handle:
            json.dump(self.state, handle, indent=1, sort_keys=True)
            # on disk before it replaces the last record: after a power cut, one of the two is whole
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.state_file)

    def act(self, description, func=None, *fargs):
        self.actions.append(description)
        if not self.check and func is not None:
            func(*fargs)

    @property
    def alias(self):
        """Marks the lab's bridges; names the state directory so two labs never adopt each other's."""
        return "virtplane-lab:" + os.path.abspath(self.state_dir)

    def owns_dir(self):
        return os.path.exists(os.path.join(self.state_dir, MARKER))

    # --- the plan ----------------------------------------------------------------------

    def recipe(self):
        """What the base root is made of; its hash names the base root's directory."""
        a = self.args
        recipe = {"suite": SUITE, "mirror": a.mirror, "security_mirror": a.security_mirror,
                  "packages": BASE_PACKAGES, "setup": BASE_SETUP}
        digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
        return recipe, digest

    def design(self):
        """Names and addresses of everything the lab is made of."""
        a = self.args
        mgmt = ipaddress.ip_network(a.subnet, strict=True)
        guest = ipaddress.ip_network(a.data_subnet, strict=True)
        if mgmt.prefixlen > 28 or guest.prefixlen > 28:
            raise LabError("subnets must be /28 or larger")
        if mgmt.overlaps(guest):
            raise LabError("subnet %s and data_subnet %s overlap" % (mgmt, guest))
        _recipe, digest = self.recipe()
        without = {n for n in a.without_systemd.split(",") if n}
        hosts = []
        names = [("%s%d" % (a.host_prefix, i), "hypervisor", 10 + i) for i in range(1, a.hosts + 1)]
        if a.engine:
            names.insert(0, (ENGINE_HOST, "engine", 10))
        for name, role, offset in names:
            directory = os.path.join(self.state_dir, "hosts", name)
            host = {
                "name": name,
                "role": role,
                "init": "none" if name in without else "systemd",
                "netns": "%s-%s" % (a.prefix, name),
                "veth": ("%s-%s" % (a.prefix, name))[:15],
                "veth2": ("%s2-%s" % (a.prefix, name))[:15] if role == "hypervisor" else None,
                "address": str(mgmt.network_address + offset),
                "address2": str(guest.network_address + offset) if role == "hypervisor" else None,
                "prefixlen": mgmt.prefixlen,
                "prefixlen2": guest.prefixlen,
                "dir": directory,
                "upper": os.path.join(directory, "upper"),
                "base": digest,
            }
            hosts.append(host)
        portal_address = guest.network_address + 2
        iscsi_dir = os.path.join(self.state_dir, "iscsi")
        lun_size = parse_size(a.lun_size)
        return {
            "prefix": a.prefix,
            "bridge": a.bridge,
            "bridge2": a.bridge + "s",
            "gateway": "%s/%d" % (mgmt.network_address + 1, mgmt.prefixlen),
            "gateway2": "%s/%d" % (guest.network_address + 1, guest.prefixlen),
            "subnet": str(mgmt),
            "data_subnet": str(guest),
            "shared_dir": os.path.join(self.state_dir, "shared"),
            "key": os.path.join(self.state_dir, "id_ed25519"),
            "base": {"hash": digest, "dir": os.path.join(self.state_dir, "base", digest)},
            "hosts": hosts,
            # the lab's storage box: a namespace of its own on the data bridge, where tgtd runs
            "storage": {
                "netns": "%s-storage" % a.prefix,
                "veth": "%s-san" % a.prefix,  # never a host's veth name: those end with a digit
                "address": str(portal_address),
                "prefixlen": guest.prefixlen,
                # derived from the address: a rebuilt storage namespace keeps its MAC, so the
                # neighbour caches of the hosts stay right
                "mac": "02:76:%02x:%02x:%02x:%02x" % tuple(portal_address.packed),
                # tgtd's control socket (tgtd and tgtadm append ".0"): one per lab, unlike the
                # default /var/run/tgtd/socket.0
                "socket": os.path.join(iscsi_dir, "tgtd.sock"),
            },
            "iscsi": {
                "dir": iscsi_dir,
                "portal": "%s:%d" % (portal_address, ISCSI_PORT),
                "target": "%s:%s" % (IQN_PREFIX, a.prefix),
                "acl": str(guest),
                "luns": [{"lun": n, "size_bytes": lun_size, "path": os.path.join(iscsi_dir, "lun%d.img" % n)}
                         for n in range(1, a.luns + 1)],
            },
        }

    def preflight(self, design):
        """Refuse, before changing anything, what the lab cannot or must not do."""
        a = self.args
        if os.geteuid() != 0:
            raise LabError("the lab needs root (namespaces, bridges and mounts): run it as root")
        # it ends up in mount options (overlayfs: ',' and ':' separate them) and in scripts
        if not re.fullmatch(r"/[A-Za-z0-9._/-]*[A-Za-z0-9._-]", self.state_dir) or "/../" in self.state_dir + "/":
            raise LabError("state_dir '%s' must be an absolute path of letters, digits, '.', '_', '-' and '/'"
                           % self.state_dir)
        if not re.fullmatch(r"/[A-Za-z0-9._/-]*[A-Za-z0-9._-]", a.cache_dir) or "/../" in a.cache_dir + "/":
            raise LabError("cache_dir '%s' must be an absolute path of letters, digits, '.', '_', '-' and '/'"
                           % a.cache_dir)
        limit = max(1, min(8, (os.cpu_count() or 1) * 2))
        if not 1 <= a.hosts <= limit:
            raise LabError("this machine can hold 1 to %d lab hosts (%d cores); %d were asked for"
                           % (limit, os.cpu_count() or 1, a.hosts))
        for field, value in (("prefix", a.prefix), ("host_prefix", a.host_prefix)):
            if not NAME.fullmatch(value):
                raise LabError("%s '%s' must be 1-10 lowercase letters, digits or '-'" % (field, value))
        if not re.fullmatch(r"[a-z][a-z0-9]{0,12}", a.bridge):
            raise LabError("bridge '%s' must be 1-13 lowercase letters or digits" % a.bridge)
        if not 1 <= a.luns <= MAX_LUNS:
            raise LabError("the lab's iSCSI target exports 1 to %d LUNs; %d were asked for" % (MAX_LUNS, a.luns))
        for field, value in (("mirror", a.mirror), ("security_mirror", a.security_mirror)):
            try:
                good = bool(MIRROR.fullmatch(value)) and urllib.parse.urlsplit(value).port != 0
            except ValueError:  # a port out of range
                good = False
            if not good:
                raise LabError("%s '%s' must be a plain http:// URL of the Debian archive, such as "
                               "http://deb.debian.org/debian" % (field, value))
        taken = {}
        for kind, name in [("host", h["name"]) for h in design["hosts"]] + \
                [("network interface", v) for h in design["hosts"] for v in (h["veth"], h["veth2"]) if v] + \
                [("network interface", design["storage"]["veth"])]:
            if (kind, name) in taken:
                raise LabError("prefix '%s' and host_prefix '%s' give two lab hosts the %s name %s (interface "
                               "names are cut at 15 characters): choose other ones" % (a.prefix, a.host_prefix,
                                                                                       kind, name))
            taken[(kind, name)] = True
        names = {h["name"] for h in design["hosts"]}
        unknown = sorted({n for n in a.without_systemd.split(",") if n} - names)
        if unknown:
            raise LabError("without_systemd names %s, which %s no host of this lab" % (
                ", ".join(unknown), "is" if len(unknown) == 1 else "are"))
        for field, value, low, high in (("boot_timeout", a.boot_timeout, 5, 900),
                                        ("stop_timeout", a.stop_timeout, 1, 300),
                                        ("host_memory", a.host_memory, 128, 1024 ** 2)):
            if not low <= value <= high:
                raise LabError("%s %d is out of range (%d to %d)" % (field, value, low, high))
        for tool in ("ip", "nsenter", "unshare", "chroot", "ssh-keygen", "debootstrap", "tgtd", "tgtadm"):
            if not shutil.which(tool) and not self.check:  # a check runs before the role installs them
                raise LabError("%s is not installed (packages iproute2, util-linux, coreutils, openssh-client, "
                               "debootstrap, tgt)" % tool)
        if not cgroup_layout():
            raise LabError("systemd in lab hosts needs the unified cgroup hierarchy or the named systemd one; "
                           "this machine has neither mounted")
        if len(design["storage"]["socket"]) + len(".0.lock") >= 108:
            raise LabError("state dir %s is too long a path for tgtd's control socket" % self.state_dir)
        if os.path.exists(self.state_dir) and not self.owns_dir():
            raise LabError("directory %s exists and was not made by the lab; choose another lab state dir"
                           % self.state_dir)
        ours = self.state or {}
        present = links()
        for bridge in (design["bridge"], design["bridge2"]):
            if bridge in present and present[bridge].get("ifalias") != self.alias:
                raise LabError("a network interface named %s exists and was not made by the lab" % bridge)
        known_ns = {h["netns"] for h in ours.get("hosts", [])}
        for host in design["hosts"]:
            if host["netns"] in namespaces() and host["netns"] not in known_ns:
                raise LabError("network namespace %s exists and was not made by the lab" % host["netns"])
            for veth in (host["veth"], host["veth2"]):
                if veth and veth in present and host["netns"] not in known_ns:
                    raise LabError("a network interface named %s exists and was not made by the lab" % veth)
        storage = design["storage"]
        if not ours.get("storage"):
            if storage["netns"] in namespaces():
                raise LabError("network namespace %s exists and was not made by the lab" % storage["netns"])
            if storage["veth"] in present:
                raise LabError("a network interface named %s exists and was not made by the lab" % storage["veth"])
        self._preflight_luns(design)
        for subnet_field in ("subnet", "data_subnet"):
            subnet = ipaddress.ip_network(design[subnet_field])
            for ifname, iface in addresses():
                if ifname in (design["bridge"], design["bridge2"]) and ifname in present \
                        and present[ifname].get("ifalias") == self.alias:
                    continue
                if iface.network.overlaps(subnet):
                    raise LabError("%s %s collides with %s on %s" % (subnet_field, subnet, iface, ifname))
        for field in ("subnet", "data_subnet", "prefix", "bridge"):
            if ours.get(field) not in (None, design[field]):
                raise LabError("the lab exists with %s %s: remove it (state: absent) before changing it"
                               % (field, ours[field]))
        self._preflight_resources(design)

    def _preflight_resources(self, design):
        """Memory and disk for what this run would add: refused before anything is made."""
        a = self.args
        starting = [h["name"] for h in design["hosts"] if not self._running(self._recorded(h["name"]))]
        need = len(starting) * a.host_memory
        have = memory_available_mib()
        if starting and need > have:
            raise LabError("lab hosts %s need %d MiB of memory (host_memory %d MiB each) and this machine has "
                           "%d MiB available: ask for fewer hosts or a smaller host_memory"
                           % (", ".join(starting), need, a.host_memory, have))
        new = [h for h in design["hosts"] if not os.path.isdir(h["upper"])
               or (self._recorded(h["name"]) or {}).get("base") != design["base"]["hash"]]
        disk = len(new) * HOST_MIB + (0 if os.path.isdir(design["base"]["dir"]) else BASE_MIB)
        free = free_mib(self.state_dir)
        if disk > free:
            raise LabError("the lab needs about %d MiB of disk in %s (%s) and %d MiB are free"
                           % (disk, self.state_dir, ", ".join(
                               (["its base root %d MiB" % BASE_MIB] if not os.path.isdir(design["base"]["dir"])
                                else []) + ["%d new hosts %d MiB each" % (len(new), HOST_MIB)] * bool(new)), free))

    def _preflight_luns(self, design):
        """LUN files are data: never shrunk, never dropped by a change of --luns or --lun-size."""
        iscsi = design["iscsi"]
        for lun in iscsi["luns"]:
            if os.path.exists(lun["path"]) and os.path.getsize(lun["path"]) != lun["size_bytes"]:
                raise LabError("LUN %d (%s) holds %d bytes, not %d: remove the lab (state: absent) before "
                               "changing the LUN size" % (lun["lun"], lun["path"], os.path.getsize(lun["path"]),
                                                          lun["size_bytes"]))
        if os.path.isdir(iscsi["dir"]):
            numbers = [int(m.group(1)) for m in map(re.compile(r"^lun([0-9]+)\.img$").match, os.listdir(iscsi["dir"]))
                       if m]
            if numbers and max(numbers) > len(iscsi["luns"]):
                raise LabError("the lab's iSCSI target has %d LUNs; %d would drop LUNs and their data: remove the "
                               "lab (state: absent) before lowering the number of LUNs"
                               % (max(numbers), len(iscsi["luns"])))

    # --- up ----------------------------------------------------------------------------

    def up(self):
        design = self.design()
        self.preflight(design)
        self.started = True
        made_dir = not self.owns_dir()
        if made_dir:
            self.act("create %s" % self.state_dir, self._make_state_dir)
        if self.state is None:
            self.state = {"hosts": []}
        # the base root first: when it cannot be built, nothing else of the lab has been made
        self._ensure_base(design, made_dir)
        self.state.update({k: design[k] for k in ("prefix", "bridge", "bridge2", "subnet", "data_subnet",
                                                  "shared_dir", "key")})
        self._save()
        if not os.path.exists(design["key"]):
            self.act("create the lab SSH key", run, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                     "virtplane-lab", "-f", design["key"])
        secret = os.path.join(self.state_dir, POWER_SECRET)
        if not os.path.exists(secret):
            self.act("create the power controller's password", self._make_power_secret, secret)
        cert = os.path.join(self.state_dir, POWER_CERT)
        if not os.path.exists(cert):
            self.act("create the power controller's certificate", make_power_cert, cert,
                     design["gateway"].split("/")[0])
        for sub in ("", "images", "lockspace"):
            path = os.path.join(design["shared_dir"], sub).rstrip("/")
            if not os.path.isdir(path):
                self.act("create %s" % path, os.makedirs, path, 0o755, True)
        present = links()
        configured = addresses()
        for bridge, gateway in ((design["bridge"], design["gateway"]), (design["bridge2"], design["gateway2"])):
            if bridge not in present:
                self.act("create bridge %s (%s)" % (bridge, gateway), self._make_bridge, bridge, gateway)
                continue
            if (bridge, ipaddress.ip_interface(gateway)) not in configured:
                # a run killed while it made the bridge: the proxy and the hosts' routes need the address
                self.act("give bridge %s its address %s" % (bridge, gateway), run, "ip", "addr", "add", gateway,
                         "dev", bridge)
            if present[bridge].get("operstate") == "DOWN" and "UP" not in present[bridge].get("flags", []):
                self.act("bring bridge %s up" % bridge, run, "ip", "link", "set", bridge, "up")
        self._ensure_proxy(design)
        self._move_old_package_cache()
        self._ensure_storage(design)
        wanted = {h["name"] for h in design["hosts"]}
        for old in [h for h in self.state["hosts"] if h["name"] not in wanted]:
            self._remove_host(old)
        booting = []
        for host in design["hosts"]:
            if self._ensure_host(host, design):
                booting.append(host["name"])
        if booting and not self.check:
            self._wait_booted([self._recorded(name) for name in booting])
        self._remove_old_bases(design)
        self._save()
        return self.report(design)

    @staticmethod
    def _make_power_secret(path):
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(24) + "\n")

    def _make_state_dir(self):
        os.makedirs(self.state_dir, 0o755, exist_ok=True)
        os.chmod(self.state_dir, 0o755)
        with open(os.path.join(self.state_dir, MARKER), "w") as handle:
            handle.write("made by the virtplane.kvm lab role; `state: absent` removes it\n")

    def _make_bridge(self, bridge, gateway):
        run("ip", "link", "add", bridge, "type", "bridge")
        run("ip", "link", "set", bridge, "alias", self.alias)
        run("ip", "addr", "add", gateway, "dev", bridge)
        run("ip", "link", "set", bridge, "up")

    def _recorded(self, name):
        for host in (self.state or {}).get("hosts", []):
            if host["name"] == name:
                return host
        return None

    # --- the base root -------------------------------------------------------------------

    def _ensure_base(self, design, made_dir):
        base = design["base"]
        if os.path.isdir(base["dir"]):
            return
        cached = os.path.join(self.args.cache_dir, "base", base["hash"])
        if os.path.isdir(cached):
            self.act("take the base root %s from %s" % (base["hash"], os.path.dirname(cached)), self._copy_base,
                     cached, base["dir"], design, made_dir)
            return
        self.act("build the base root %s (debootstrap %s from %s)" % (base["hash"], SUITE, self.args.mirror),
                 self._build_base, design, made_dir)

    def _copy_base(self, source, target, design, made_dir):
        """A base root another lab of this machine built with the same recipe: hard links, so it takes
        seconds and no disk (no one writes into a base root: it is the hosts' read-only lower layer).
        A cache that cannot be read is no error: the base root is built instead."""
        build = os.path.join(os.path.dirname(target), ".build")
        if os.path.exists(build):
            shutil.rmtree(build)
        os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
        try:
            copy_tree(source, build)
        except LabError:
            self._build_base(design, made_dir)
            return
        with open(os.path.join(os.path.dirname(target), "build.log"), "w") as log:
            log.write("the base root %s was taken from %s, built there by another lab of this machine\n"
                      % (os.path.basename(target), source))
        os.rename(build, target)
        os.utime(source)  # recently used: kept in the cache

    def _cache_base(self, base):
        """Keep the new base root for the next lab of this machine (the cache holds the BASE_CACHE_KEEP
        most recently used ones). A cache only: when it cannot be written, the lab is still whole."""
        cache = os.path.join(self.args.cache_dir, "base")
        try:
            os.makedirs(cache, 0o755, exist_ok=True)
            for name in os.listdir(cache):  # what a killed run left half-copied
                if name.startswith(".add-") and not os.path.exists("/proc/%s" % name[5:]):
                    shutil.rmtree(os.path.join(cache, name), ignore_errors=True)
            adding = os.path.join(cache, ".add-%d" % os.getpid())
            copy_tree(base["dir"], adding)
            try:
                os.rename(adding, os.path.join(cache, base["hash"]))
            except OSError:  # another lab cached the same recipe meanwhile
                shutil.rmtree(adding, ignore_errors=True)
            kept = sorted((n for n in os.listdir(cache) if re.fullmatch(r"[0-9a-f]{16}", n)),
                          key=lambda n: os.stat(os.path.join(cache, n)).st_mtime, reverse=True)
            for name in kept[BASE_CACHE_KEEP:]:
                shutil.rmtree(os.path.join(cache, name), ignore_errors=True)
        except (OSError, LabError):
            pass

    def _build_base(self, design, made_dir):
        """debootstrap into base/.build, then set it up in a chroot; renamed into place only when whole."""
        base = design["base"]
        build = os.path.join(self.state_dir, "base", ".build")
        if os.path.exists(build):
            shutil.rmtree(build)  # what a killed build left (its mounts died with its mount namespace)
        os.makedirs(build)
        log_path = os.path.join(self.state_dir, "base", "build.log")
        caches = package_caches(self.args)
        os.makedirs(caches[0], 0o755, exist_ok=True)
        proxy = PackageProxy(("127.0.0.1", 0), mirror_netlocs(self.args.mirror, self.args.security_mirror), caches)
        thread = threading.Thread(target=proxy.serve_forever, daemon=True)
        thread.start()
        env = dict(os.environ, http_proxy="http://127.0.0.1:%d/" % proxy.server_address[1], LC_ALL="C",
                   DEBIAN_FRONTEND="noninteractive")
        env.pop("https_proxy", None)
        # in a mount namespace of its own: whatever debootstrap and the chroot mount goes away with it,
        # even when this run is killed
        script = ("debootstrap --variant=minbase --include=%s %s \"$1\" \"$2\" && "
                  "mount -t proc proc \"$1/proc\" && chroot \"$1\" /bin/sh -ec \"$5\" sh \"$2\" \"$3\" \"$4\""
                  % (",".join(BASE_PACKAGES), SUITE))
        try:
            with open(log_path, "w") as log:
                proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-ec",
                                       script, "sh", build, self.args.mirror, self.args.security_mirror, SUITE,
                                       BASE_SETUP], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                      env=env, check=False)
        finally:
            proxy.shutdown()
            proxy.server_close()
        if proc.returncode != 0:
            lines = tail(log_path, 200)
            debootstrap_log = tail(os.path.join(build, "debootstrap", "debootstrap.log"), 200)
            shutil.rmtree(build, ignore_errors=True)
            if made_dir:
                # a new lab whose base root cannot be built leaves nothing behind
                shutil.rmtree(self.state_dir, ignore_errors=True)
            else:
                os.unlink(log_path)
            raise LabError("the lab's base root could not be built (debootstrap %s from %s): %s" % (
                SUITE, self.args.mirror, self._why_build_failed(lines + debootstrap_log)))
        os.rename(build, base["dir"])
        self._cache_base(base)

    def _why_build_failed(self, lines):
        text = "\n".join(lines)
        if "No space left on device" in text:
            return "no space left on device in %s (%d MiB free)" % (self.state_dir, free_mib(self.state_dir))
        reasons = [line for line in lines if re.search(r"\b(E|W): |Failed|failed|Couldn't|Could not|error|502|"
                                                       r"does not answer|Temporary failure", line)]
        picked = (reasons or lines)[-4:]
        return " / ".join(dict.fromkeys(line.strip() for line in picked)) or "no output"

    def _remove_old_bases(self, design):
        """Base roots of an older recipe that no host stands on any more."""
        directory = os.path.join(self.state_dir, "base")
        if not os.path.isdir(directory):
            return
        used = {h.get("base") for h in self.state["hosts"]} | {design["base"]["hash"]}
        for name in sorted(os.listdir(directory)):
            if re.fullmatch(r"[0-9a-f]{16}", name) and name not in used:
                self.act("remove the old base root %s" % name, shutil.rmtree, os.path.join(directory, name))

    # --- the package proxy -------------------------------------------------------------

    def _proxy_running(self):
        proxy = (self.state or {}).get("proxy") or {}
        return alive(proxy.get("pid"), proxy.get("started")) and proxy.get("version") == self._tool_version() \
            and proxy.get("mirrors") == [self.args.mirror, self.args.security_mirror]

    @staticmethod
    def _tool_version():
        with open(os.path.abspath(__file__), "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()[:16]

    def _ensure_proxy(self, design):
        if self._proxy_running():
            return
        gateway = design["gateway"].split("/")[0]
        if (self.state or {}).get("proxy"):
            self.act("stop the old package proxy", self._stop_proxy)
        self.act("start the package proxy at %s:%d" % (gateway, PROXY_PORT), self._start_proxy, gateway)

    def _move_old_package_cache(self):
        """Packages an older lab kept in its own state directory go to the labs' cache."""
        old = os.path.join(self.state_dir, "apt-cache")
        if not os.path.isdir(old):
            return
        self.act("move the packages of %s to %s" % (old, package_caches(self.args)[0]), self._move_packages, old)

    def _move_packages(self, old):
        cache = package_caches(self.args)[0]
        os.makedirs(cache, 0o755, exist_ok=True)
        for name in os.listdir(old):
            with contextlib.suppress(OSError):
                if ".partial-" not in name:
                    os.replace(os.path.join(old, name), os.path.join(cache, name))
        shutil.rmtree(old, ignore_errors=True)

    def _start_proxy(self, gateway):
        # a copy of this tool in the state dir runs it: the one Ansible copied here is removed after the run
        tool = os.path.join(self.state_dir, "virtplane_lab.py")
        shutil.copyfile(os.path.abspath(__file__), tool)
        os.makedirs(package_caches(self.args)[0], 0o755, exist_ok=True)
        prune_package_cache(package_caches(self.args)[0])
        ready = os.path.join(self.state_dir, "proxy.ready")
        if os.path.exists(ready):
            os.unlink(ready)
        log = open(os.path.join(self.state_dir, "proxy.log"), "a")  # noqa: SIM115 - the child keeps it
        with log:
            proc = subprocess.Popen(
                [sys.executable, tool, "proxy", "--state-dir", self.state_dir, "--listen", gateway,
                 "--cache-dir", self.args.cache_dir, "--mirror", self.args.mirror,
                 "--security-mirror", self.args.security_mirror],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        # recorded at once: a run killed from here on leaves a proxy that down still stops
        self.state["proxy"] = {"pid": proc.pid, "started": start_time(proc.pid), "version": self._tool_version(),
                               "address": "%s:%d" % (gateway, PROXY_PORT),
                               "mirrors": [self.args.mirror, self.args.security_mirror]}
        self._save()
        deadline = time.time() + 10
        while time.time() < deadline:
            if proc.poll() is not None:
                self.state["proxy"] = None
                self._save()
                raise LabError("the package proxy did not start: %s" % " / ".join(
                    tail(os.path.join(self.state_dir, "proxy.log"), 3)))
            if os.path.exists(ready):
                with open(ready) as handle:
                    if handle.read().strip() == str(proc.pid):
                        return
            time.sleep(0.05)
        self._stop_proxy()
        raise LabError("the package proxy did not start serving at %s:%d within 10 s" % (gateway, PROXY_PORT))

    def _stop_proxy(self):
        proxy = (self.state or {}).get("proxy") or {}
        if alive(proxy.get("pid"), proxy.get("started")):
            os.kill(proxy["pid"], signal.SIGKILL)
        if self.state:
            self.state["proxy"] = None
            self._save()

    # --- hosts -------------------------------------------------------------------------

    @staticmethod
    def _running(recorded):
        return bool(recorded) and alive(recorded.get("pid"), recorded.get("started")) \
            and in_netns(recorded["pid"], recorded["netns"])

    def _network_ok(self, recorded, design):
        if recorded["netns"] not in namespaces():
            return False
        present = links()
        for veth, bridge in ((recorded["veth"], design["bridge"]), (recorded.get("veth2"), design["bridge2"])):
            if veth and (veth not in present or present[veth].get("master") != bridge):
                return False
        return True

    def _ensure_host(self, host, design):
        """Make, repair or boot ``host``; True when it is booting and must be waited for."""
        recorded = self._recorded(host["name"])
        same = recorded and all(recorded.get(k) == host[k] for k in ("address", "address2", "base", "init", "role"))
        if same and self._running(recorded):
            self._reattach(recorded, design)
            return False
        remade = bool(recorded and not same)
        if remade:
            why = ("an older kind of lab host" if "base" not in recorded else "made on an older base root"
                   if recorded["base"] != host["base"] else "changed")
            self.act("remove lab host %s (%s)" % (host["name"], why), self._destroy_host, recorded, True)
            if not self.check:
                self._forget(host["name"])
            recorded = None
        if recorded is None and not remade and host["netns"] in namespaces():
            # a namespace this lab made (preflight refused any other) whose host was never recorded
            self.act("remove the leftovers of lab host %s" % host["name"], self._destroy_host,
                     dict(host, pid=0, started=None, cgroups=[]), True)
        if recorded and os.path.exists(os.path.join(recorded["dir"], ROOT_MADE)):
            self.act("boot lab host %s (it was down)" % host["name"], self._boot_again, recorded, design)
        else:
            self.act("create lab host %s at %s" % (host["name"], host["address"]), self._make_host, host, design)
        return True

    def _reattach(self, recorded, design):
        """A running host's NICs back on their bridges (a bridge that was deleted is made again empty)."""
        present = links()
        for veth, bridge in ((recorded["veth"], design["bridge"]), (recorded.get("veth2"), design["bridge2"])):
            if veth and veth in present and present[veth].get("master") != bridge:
                self.act("attach lab host %s's %s to bridge %s" % (recorded["name"], veth, bridge), run, "ip", "link",
                         "set", veth, "master", bridge, "up")

    def _boot_again(self, recorded, design):
        # what is left of its last boot goes first (a run killed before it recorded the host's init
        # leaves one that runs unrecorded): two inits must never share its root
        self._stop([recorded])
        self._save()
        self._boot(recorded, design)

    def _forget(self, name):
        self.state["hosts"] = [h for h in self.state["hosts"] if h["name"] != name]
        self._save()

    def _make_host(self, host, design):
        # recorded first: a run killed half-way leaves a host the next run knows and rebuilds
        host = dict(host, pid=0, started=None, anchor=0, cgroups=[])
        self.state["hosts"] = [h for h in self.state["hosts"] if h["name"] != host["name"]] + [host]
        self._save()
        try:
            if os.path.exists(host["dir"]):
                self._refuse_mounts_under(host["dir"])
                shutil.rmtree(host["dir"])
            self._make_root(host, design)
            self._boot(host, design)
        except (LabError, OSError):
            self._destroy_host(host, True)
            self._forget(host["name"])
            raise

    def _make_root(self, host, design):
        """The host's own files on top of the base root: its identity, the lab key, apt's proxy."""
        for sub in ("upper", "work", "root"):
            os.makedirs(os.path.join(host["dir"], sub), 0o755)
        upper = host["upper"]

        def write(path, text, mode=0o644):
            target = os.path.join(upper, path.lstrip("/"))
            os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
            with open(target, "w") as handle:
                handle.write(text)
            os.chmod(target, mode)

        write("/etc/hostname", host["name"] + "\n")
        # a host resolves its own name, as an installed one does: else libvirt asks DNS, which no lab
        # host reaches, and waits 10 s at every guest start
        write("/etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n%s\t%s\n"
              % (host["address"], host["name"]))
        # stable across boots: the hypervisor role derives the libvirt host UUID from it
        write("/etc/machine-id", uuid.uuid5(uuid.NAMESPACE_URL, self.alias + "/" + host["name"]).hex + "\n", 0o444)
        os.makedirs(os.path.join(upper, "etc", "ssh"), 0o755, exist_ok=True)
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "root@" + host["name"], "-f",
            os.path.join(upper, "etc", "ssh", "ssh_host_ed25519_key"))
        with open(design["key"] + ".pub") as handle:
            write("/root/.ssh/authorized_keys", handle.read(), 0o600)
        os.chmod(os.path.join(upper, "root", ".ssh"), 0o700)
        os.chmod(os.path.join(upper, "root"), 0o700)
        write("/etc/apt/apt.conf.d/01virtplane-lab-proxy",
              "// the lab's package proxy: lab hosts reach no network but the lab's\n"
              "Acquire::http::Proxy \"http://%s:%d/\";\n" % (design["gateway"].split("/")[0], PROXY_PORT))
        if host["init"] == "none":
            write("/usr/local/sbin/virtplane-lab-init", MINIMAL_INIT, 0o755)
            # as in container images: packages do not start their daemons where no init system runs
            write("/usr/sbin/policy-rc.d", "#!/bin/sh\n# lab host without systemd: no daemon starts on install\n"
                  "exit 101\n", 0o755)
        # last: a root without it was left half-made by a killed run, and is made again
        with open(os.path.join(host["dir"], ROOT_MADE), "w") as handle:
            handle.write(host["base"] + "\n")

    def _make_network(self, host, design):
        ns = host["netns"]
        if ns in namespaces():
            kill_netns(ns)
            run("ip", "netns", "del", ns, check=False)
        present = links()
        for veth in (host["veth"], host["veth2"]):
            if veth and veth in present:
                run("ip", "link", "del", veth, check=False)
        run("ip", "netns", "add", ns)
        nics = [(host["veth"], "eth0", design["bridge"], host["address"], host["prefixlen"])]
        if host["veth2"]:
            nics.append((host["veth2"], "eth1", design["bridge2"], host["address2"], host["prefixlen2"]))
        for veth, peer, bridge, address, prefixlen in nics:
            run("ip", "link", "add", veth, "type", "veth", "peer", "name", peer, "netns", ns)
            run("ip", "link", "set", veth, "master", bridge, "up")
            run("ip", "-n", ns, "addr", "add", "%s/%d" % (address, prefixlen), "dev", peer)
            run("ip", "-n", ns, "link", "set", peer, "up")
        run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "-n", ns, "route", "add", "default", "via", design["gateway"].split("/")[0])
        if host["address2"] and design["storage"]["netns"] in namespaces():
            # a rebuilt host has a new MAC behind its data address: the iSCSI portal must not remember the old one
            run("ip", "-n", design["storage"]["netns"], "neigh", "flush", "to", host["address2"], check=False)
        # ... nor this machine behind its management address
        run("ip", "neigh", "flush", "to", host["address"], check=False)

    def _boot_script(self, host, design, layout):
        """What PID 1 of the new namespaces runs before it becomes the host's init: its mounts."""
        q = shlex.quote
        root = os.path.join(host["dir"], "root")
        lines = [
            "mount -t overlay overlay -o %s %s" % (q("lowerdir=%s,upperdir=%s,workdir=%s" % (
                design["base"]["dir"], host["upper"], os.path.join(host["dir"], "work"))), q(root)),
            "cd %s" % q(root),
            "mount -t proc -o nosuid,nodev,noexec proc proc",
            # the kernel's settings are this machine's: a host changes only its network namespace's
            # (as systemd-nspawn does), and cannot trigger SysRq on the machine
            "mount --bind proc/sys proc/sys && mount --bind proc/sys/net proc/sys/net"
            " && mount -o remount,bind,ro proc/sys",
            "if [ -e proc/sysrq-trigger ]; then mount --bind proc/sysrq-trigger proc/sysrq-trigger"
            " && mount -o remount,bind,ro proc/sysrq-trigger; fi",
            "mount -t tmpfs -o mode=755,nosuid,size=16m tmpfs dev",
            "mkdir -p dev/net dev/pts dev/shm",
        ]
        for name in DEVICES:
            try:
                info = os.stat("/dev/" + name)
            except OSError:
                continue
            if stat.S_ISCHR(info.st_mode):
                lines.append("mknod -m %o dev/%s c %d %d" % (stat.S_IMODE(info.st_mode), name,
                                                             os.major(info.st_rdev), os.minor(info.st_rdev)))
        lines += [
            "mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts dev/pts",
            "ln -s pts/ptmx dev/ptmx",
            "mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs dev/shm",
            "ln -s /proc/self/fd dev/fd && ln -s /proc/self/fd/0 dev/stdin && ln -s /proc/self/fd/1 dev/stdout"
            " && ln -s /proc/self/fd/2 dev/stderr",
            # this network namespace's sysfs (its own interfaces)
            "mount -t sysfs -o nosuid,nodev,noexec sysfs sys",
        ]
        if "systemd" in layout:
            lines += ["mount -t tmpfs -o mode=755,nosuid,nodev,noexec tmpfs sys/fs/cgroup",
                      "mkdir -p sys/fs/cgroup/systemd sys/fs/cgroup/unified",
                      "mount -t cgroup -o none,name=systemd,nosuid,nodev,noexec cgroup sys/fs/cgroup/systemd"]
            if "unified" in layout:
                lines.append("mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 sys/fs/cgroup/unified")
        else:
            lines.append("mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 sys/fs/cgroup")
        shared = design["shared_dir"]
        lines += [
            "mount -t tmpfs -o mode=755,nosuid,nodev tmpfs run",
            "mkdir -p .%s && mount --bind %s .%s" % (q(shared), q(shared), q(shared)),
            "hostname %s" % q(host["name"]),
        ]
        init = "/lib/systemd/systemd --system" if host["init"] == "systemd" else "/usr/local/sbin/virtplane-lab-init"
        lines.append("exec chroot . /usr/bin/env -i container=virtplane-lab "
                     "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin %s" % init)
        return "\n".join(lines) + "\n"

    def _boot(self, host, design):
        """Start the host's init in new namespaces, in the host's network namespace and cgroups."""
        if not self._network_ok(host, design):
            self._make_network(host, design)
        layout = cgroup_layout()
        cgroups = []
        for _key, (mount, current) in sorted(layout.items()):
            path = os.path.join(mount, current.lstrip("/"), host["netns"])
            if not remove_cgroup(path):
                raise LabError("lab host %s cannot boot: processes of its last boot remain in %s"
                               % (host["name"], path))
            os.mkdir(path)
            cgroups.append(path)
        host["cgroups"] = cgroups
        self._save()

        def join_cgroups():
            for path in cgroups:
                with open(os.path.join(path, "cgroup.procs"), "w") as handle:
                    handle.write(str(os.getpid()))

        console = os.path.join(host["dir"], "console.log")
        with open(console, "a") as log:
            log.write("--- %s boot\n" % time.strftime("%Y-%m-%dT%H:%M:%S"))
            log.flush()
            # ip netns exec and unshare exec one another: the pid is unshare's, which waits for the
            # host's PID 1 (its child) until the host stops
            anchor = subprocess.Popen(
                ["ip", "netns", "exec", host["netns"], "unshare", "--pid", "--fork", "--mount", "--uts", "--ipc",
                 "--cgroup", "--propagation", "private", "--", "/bin/sh", "-ec",
                 self._boot_script(host, design, layout)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=join_cgroups)  # noqa: PLW1509 - this tool runs no threads while it boots hosts
        host.update(anchor=anchor.pid, pid=0, started=None, booted=time.time())
        deadline = time.time() + 15
        while time.time() < deadline:
            if anchor.poll() is not None:
                raise LabError("lab host %s did not start: %s" % (host["name"], " / ".join(tail(console, 4))))
            pid = self._init_pid(anchor.pid)
            if pid:
                host.update(pid=pid, started=start_time(pid))
                self._save()
                return
            time.sleep(0.05)
        raise LabError("lab host %s did not start its init within 15 s: %s" % (host["name"],
                                                                               " / ".join(tail(console, 4))))

    @staticmethod
    def _init_pid(anchor):
        """The host's PID 1 once the boot script has exec'd its init (sh, chroot and env come first)."""
        try:
            with open("/proc/%d/task/%d/children" % (anchor, anchor)) as handle:
                children = [int(p) for p in handle.read().split()]
        except OSError:
            return 0
        for pid in children:
            try:
                with open("/proc/%d/comm" % pid) as handle:
                    if handle.read().strip() not in ("sh", "chroot", "env"):
                        return pid
            except OSError:
                pass
        return 0

    def in_host(self, host, *argv, timeout=30):
        """Run ``argv`` in a running host (all its namespaces, its root)."""
        return subprocess.run(["nsenter", "--target", str(host["pid"]), "--all", "--root", "--wd", "--", *argv],
                              capture_output=True, text=True, timeout=timeout, check=False)

    def _booted(self, host):
        """None while booting; True once up (init done, sshd answering); a reason string when it failed."""
        if not self._running(host):
            return "it stopped while booting"
        if host["init"] == "systemd":
            try:
                state = self.in_host(host, "systemctl", "is-system-running", timeout=10).stdout.strip()
            except subprocess.TimeoutExpired:
                return None
            if state in ("initializing", "starting", ""):
                return None
            if state not in ("running", "degraded"):
                return "systemd is %s" % state
        try:
            with socket.create_connection((host["address"], 22), timeout=1) as conn:
                conn.settimeout(2)
                return True if conn.recv(64).startswith(b"SSH-") else None
        except OSError:
            return None

    def _wait_booted(self, hosts):
        """Until every host is up, or the first that is not within the boot timeout fails the run."""
        deadline = time.time() + self.args.boot_timeout
        waiting = list(hosts)
        while waiting:
            for host in list(waiting):
                outcome = self._booted(host)
                if outcome is True:
                    waiting.remove(host)
                    host["failed_units"] = self._failed_units(host)
                elif outcome is not None or time.time() > deadline:
                    self._boot_failed(host, outcome or "it did not finish booting within %d s (boot_timeout)"
                                      % self.args.boot_timeout)
            time.sleep(0.2)
        self._save()

    def _failed_units(self, host):
        if host["init"] != "systemd":
            return []
        out = self.in_host(host, "systemctl", "--failed", "--plain", "--no-legend").stdout
        return [line.split()[0] for line in out.splitlines() if line.split()]

    def _boot_failed(self, host, why):
        jobs, stuck, about = [], [], ""
        if host["init"] == "systemd" and self._running(host):
            # JOB UNIT TYPE STATE: the jobs that still run are what the boot waits for
            for fields in (line.split() for line in self.in_host(
                    host, "systemctl", "list-jobs", "--no-legend", "--plain").stdout.splitlines()):
                if len(fields) >= 4:
                    jobs.append(fields[1])
                    if fields[3] == "running" and fields[1].endswith(".service"):
                        stuck.append(fields[1])
        if stuck:
            about = "; the journal of %s: %s" % (" ".join(stuck), " | ".join(
                self._journal_tail(host, 4, units=stuck)) or "(none)")
        journal = self._journal_tail(host)
        self._stop([host])
        self._save()
        raise LabError("lab host %s was stopped: %s%s%s; the last lines of its journal: %s" % (
            host["name"], why, "; waiting: %s" % " ".join(jobs) if jobs else "", about,
            " | ".join(journal) or "(none)"))

    def _journal_tail(self, host, lines=12, units=()):
        """The host's last journal lines (of these units only, if named): read inside while it runs, else
        from its persistent journal."""
        if host["init"] == "systemd" and self._running(host):
            out = self.in_host(host, "journalctl", "-q", "-n", str(lines), "--no-pager", "-o", "short",
                               *["--unit=%s" % unit for unit in units]).stdout
        else:
            journal = os.path.join(host["upper"], "var", "log", "journal")
            out = ""
            if os.path.isdir(journal) and shutil.which("journalctl"):
                out = run("journalctl", "-q", "-D", journal, "-n", str(lines), "--no-pager", "-o", "short",
                          *["--unit=%s" % unit for unit in units], check=False)
            if not out.strip():
                out = "\n".join(tail(os.path.join(host["dir"], "console.log"), lines))
        return [line.strip() for line in out.splitlines() if line.strip()][-lines:]

    # --- stopping ----------------------------------------------------------------------

    def _stop(self, hosts):
        """Power the hosts off as machines do, then kill what is left in them; their cgroups go."""
        running = [h for h in hosts if self._running(h)]
        for host in running:
            try:
                # SIGRTMIN+4 is systemd's poweroff; the minimal init powers off on SIGTERM
                os.kill(host["pid"], signal.SIGRTMIN + 4 if host.get("init") == "systemd" else signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.time() + self.args.stop_timeout
        while time.time() < deadline and any(alive(h["pid"], h.get("started")) for h in running):
            time.sleep(0.1)
        for host in running:
            self.stopped[host["name"]] = "powered off"
        for host in hosts:
            if alive(host.get("pid"), host.get("started")):
                self.stopped[host["name"]] = "killed: not powered off within %d s (stop_timeout)" % (
                    self.args.stop_timeout)
                os.kill(host["pid"], signal.SIGKILL)  # PID 1 of the namespace: every process of the host goes
            if host["netns"] in namespaces():
                kill_netns(host["netns"])
            anchor = host.get("anchor")
            if anchor and self._is_anchor(anchor, host):
                os.kill(anchor, signal.SIGKILL)
            for path in host.get("cgroups") or []:
                if not remove_cgroup(path):
                    raise LabError("processes of lab host %s remain in %s" % (host["name"], path))
            host.update(pid=0, started=None, cgroups=[])

    @staticmethod
    def _is_anchor(pid, host):
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:
            return False
        return argv[:1] == [b"unshare"] and in_netns(pid, host["netns"])

    def _destroy_host(self, host, remove_files):
        self._stop([host])
        ns = host["netns"]
        if ns in namespaces():
            run("ip", "netns", "del", ns, check=False)
        present = links()
        for veth in (host.get("veth"), host.get("veth2")):
            if veth and veth in present:
                run("ip", "link", "del", veth, check=False)
        if remove_files and os.path.isdir(host["dir"]):
            self._refuse_mounts_under(host["dir"])
            shutil.rmtree(host["dir"])

    @staticmethod
    def _refuse_mounts_under(path):
        prefix = os.path.abspath(path) + "/"
        with open("/proc/self/mountinfo") as handle:
            mounted = [line.split()[4] for line in handle if (line.split()[4] + "/").startswith(prefix)]
        if mounted:
            raise LabError("%s is still mounted: not removing %s" % (mounted[0], path))

    def _remove_host(self, host):
        self.act("remove lab host %s" % host["name"], self._destroy_host, host, True)
        if not self.check:
            self._forget(host["name"])

    # --- storage: the lab's iSCSI target ------------------------------------------------
    #
    # tgtd listens only at <data subnet>.2:3260 inside <prefix>-storage, a namespace with no default
    # route: nothing outside the data subnet can even complete a TCP handshake with it. On top of
    # that the target accepts initiators by address from the data subnet only (tgt matches
    # --initiator-address against CIDR networks), not ALL. Its own namespace also keeps port 3260 of
    # this machine free (a system tgtd binds 0.0.0.0:3260) and lets two labs run side by side.

    def _storage_healthy(self, recorded, design):
        storage = design["storage"]
        if not recorded or recorded.get("address") != storage["address"] or storage["netns"] not in namespaces():
            return False
        veth = links().get(storage["veth"])
        return bool(veth) and veth.get("master") == design["bridge2"] and "UP" in veth.get("flags", [])

    @staticmethod
    def _tgtd_running(recorded, design):
        pid = (recorded or {}).get("tgtd_pid")
        return in_netns(pid, design["storage"]["netns"]) and is_tgtd(pid, design["storage"]["socket"])

    def _ensure_storage(self, design):
        storage, iscsi = design["storage"], design["iscsi"]
        if not os.path.isdir(iscsi["dir"]):
            self.act("create %s" % iscsi["dir"], os.makedirs, iscsi["dir"], 0o700, True)
        for lun in iscsi["luns"]:
            if not os.path.exists(lun["path"]):
                self.act("create LUN %d file %s (%d bytes, sparse)" % (lun["lun"], lun["path"], lun["size_bytes"]),
                         self._make_lun_file, lun)
        recorded = self.state.get("storage")
        healthy = self._storage_healthy(recorded, design)
        if not healthy:
            if recorded or storage["netns"] in namespaces():
                # left over from a killed run or a changed bridge: rebuild it whole (the LUN files stay)
                self.act("remove lab storage %s" % storage["netns"], self._remove_storage, recorded or storage)
            self.act("create lab storage %s at %s" % (storage["netns"], storage["address"]), self._make_storage,
                     design)
        if not healthy or not self._tgtd_running(self.state.get("storage"), design):
            self.act("start tgtd at %s" % iscsi["portal"], self._start_tgtd, design)
            targets = {}  # a new tgtd starts empty
        else:
            targets = parse_targets(self._tgtadm(design, "--mode", "target", "--op", "show").stdout)
        self._configure_target(design, targets)

    @staticmethod
    def _make_lun_file(lun):
        with open(lun["path"], "xb") as handle:
            handle.truncate(lun["size_bytes"])  # sparse: blocks are allocated as the initiators write

    def _make_storage(self, design):
        storage = dict(design["storage"], tgtd_pid=0)
        # recorded first: a run killed half-way leaves a namespace the next run knows and rebuilds
        self.state["storage"] = storage
        self._save()
        ns = storage["netns"]
        try:
            run("ip", "netns", "add", ns)
            run("ip", "link", "add", storage["veth"], "type", "veth", "peer", "name", "eth0", "netns", ns)
            run("ip", "-n", ns, "link", "set", "eth0", "address", storage["mac"])
            run("ip", "link", "set", storage["veth"], "master", design["bridge2"], "up")
            run("ip", "-n", ns, "addr", "add", "%s/%d" % (storage["address"], storage["prefixlen"]), "dev", "eth0")
            run("ip", "-n", ns, "link", "set", "eth0", "up")
            run("ip", "-n", ns, "link", "set", "lo", "up")
            # no default route, on purpose: the portal answers the data subnet and nothing else
        except (LabError, OSError):
            self._destroy_storage(storage)
            self.state["storage"] = None
            self._save()
            raise

    def _start_tgtd(self, design):
        storage, iscsi = self.state["storage"], design["iscsi"]
        # only tgtd lives in the storage namespace: a stray one (its pid never recorded) would hold
        # the control socket's lock and the portal's port
        kill_netns(storage["netns"])
        env = dict(os.environ, TGT_IPC_SOCKET=storage["socket"])
        log_path = os.path.join(iscsi["dir"], "tgtd.log")
        with open(log_path, "a") as log:
            # `ip netns exec` execs tgtd: the pid is tgtd's
            tgtd = subprocess.Popen(
                ["ip", "netns", "exec", storage["netns"], "tgtd", "--foreground", "--iscsi",
                 "portal=%s" % iscsi["portal"]],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        storage["tgtd_pid"] = tgtd.pid
        self._save()
        deadline = time.time() + 10
        while time.time() < deadline:
            if tgtd.poll() is not None:
                raise LabError("tgtd did not start (see %s): %s" % (log_path, " / ".join(tail(log_path, 3))))
            if self._tgtadm(design, "--mode", "system", "--op", "show", check=False).returncode == 0 \
                    and self._tgtd_running(storage, design):
                return
            time.sleep(0.05)
        raise LabError("tgtd did not answer on %s.0 within 10 s" % storage["socket"])

    def _tgtadm(self, design, *argv, check=True):
        proc = subprocess.run(["tgtadm", "--lld", "iscsi", *argv], capture_output=True, text=True, check=False,
                              env=dict(os.environ, TGT_IPC_SOCKET=design["storage"]["socket"]))
        if check and proc.returncode != 0:
            raise LabError("tgtadm %s failed: %s" % (" ".join(argv), (proc.stderr or proc.stdout).strip()))
        return proc

    def _configure_target(self, design, targets):
        """Add what is missing of the target, its LUNs and its ACL to a running tgtd."""
        iscsi = design["iscsi"]
        target = targets.get(iscsi["target"])
        if target is None:
            tid = max([t["tid"] for t in targets.values()], default=0) + 1
            self.act("create iSCSI target %s" % iscsi["target"], self._tgtadm, design, "--mode", "target", "--op",
                     "new", "--tid", str(tid), "--targetname", iscsi["target"])
            target = {"tid": tid, "luns": {}, "acls": []}
        tid = str(target["tid"])
        for lun in iscsi["luns"]:
            if target["luns"].get(lun["lun"]) == lun["path"]:
                continue
            if lun["lun"] in target["luns"]:
                self.act("remove LUN %d (%s) from the target" % (lun["lun"], target["luns"][lun["lun"]]),
                         self._tgtadm, design, "--mode", "logicalunit", "--op", "delete", "--tid", tid,
                         "--lun", str(lun["lun"]))
            self.act("export LUN %d (%s)" % (lun["lun"], lun["path"]), self._add_lun, design, tid, lun)
        if iscsi["acl"] not in target["acls"]:
            self.act("allow initiators from %s" % iscsi["acl"], self._tgtadm, design, "--mode", "target", "--op",
                     "bind", "--tid", tid, "--initiator-address", iscsi["acl"])

    def _add_lun(self, design, tid, lun):
        self._tgtadm(design, "--mode", "logicalunit", "--op", "new", "--tid", tid, "--lun", str(lun["lun"]),
                     "--backing-store", lun["path"], "--bstype", "rdwr")
        # SCSI ids of the lab's own, instead of tgt's default (the same for every tgtd)
        self._tgtadm(design, "--mode", "logicalunit", "--op", "update", "--tid", tid, "--lun", str(lun["lun"]),
                     "--params", "scsi_id=virtplane-%s-lun%d,scsi_sn=%s-lun%d"
                     % (design["prefix"], lun["lun"], design["prefix"], lun["lun"]))

    def _remove_storage(self, storage):
        self._destroy_storage(storage)
        self.state["storage"] = None
        self._save()

    @staticmethod
    def _destroy_storage(storage):
        ns, socket_path = storage["netns"], storage.get("socket")
        if socket_path and is_tgtd(storage.get("tgtd_pid"), socket_path):
            try:
                os.kill(storage["tgtd_pid"], signal.SIGKILL)  # even if it no longer is in the namespace
            except ProcessLookupError:
                pass
        if ns in namespaces():
            kill_netns(ns)
            run("ip", "netns", "del", ns, check=False)
        if storage.get("veth") in links():
            run("ip", "link", "del", storage["veth"], check=False)
        for suffix in (".0", ".0.lock"):
            if socket_path and os.path.exists(socket_path + suffix):
                os.unlink(socket_path + suffix)

    # --- down --------------------------------------------------------------------------

    def down(self):
        if self.state is None and not self.owns_dir():
            design = self.design()
            present = links()
            for bridge in (design["bridge"], design["bridge2"]):
                if bridge in present and present[bridge].get("ifalias") == self.alias:
                    self.act("remove bridge %s" % bridge, run, "ip", "link", "del", bridge)
            return self.report(None)
        if os.path.isdir(self.state_dir) and not self.owns_dir():
            raise LabError("directory %s was not made by the lab; not removing it" % self.state_dir)
        self.started = True
        state = self.state or {"hosts": []}
        hosts = list(state["hosts"])
        if hosts:
            # all at once: each host's power-off runs while the others' does
            self.act("stop lab hosts %s" % ", ".join(h["name"] for h in hosts), self._stop, hosts)
        for host in hosts:
            self._remove_host(host)
        if state.get("proxy"):
            self.act("stop the package proxy", self._stop_proxy)
        if state.get("storage"):
            self.act("remove lab storage %s (tgtd, iSCSI target)" % state["storage"]["netns"],
                     self._destroy_storage, state["storage"])
        present = links()
        # the recorded bridges, and this run's names too: a run killed before recording them
        names = (state.get("bridge"), state.get("bridge2"), self.args.bridge, self.args.bridge + "s")
        for bridge in dict.fromkeys(names):
            if bridge and bridge in present and present[bridge].get("ifalias") == self.alias:
                self.act("remove bridge %s" % bridge, run, "ip", "link", "del", bridge)
        if os.path.isdir(self.state_dir):
            self._refuse_mounts_under(self.state_dir)
        self.act("remove %s" % self.state_dir, shutil.rmtree, self.state_dir)
        return self.report(None)

    # --- report ------------------------------------------------------------------------

    def report(self, design):
        hosts = []
        if design:
            for host in design["hosts"]:
                recorded = self._recorded(host["name"]) or host
                hosts.append({"name": host["name"], "role": host["role"], "init": host["init"],
                              "address": host["address"], "data_address": host["address2"],
                              "netns": host["netns"], "pid": recorded.get("pid"), "dir": host["dir"],
                              "root": host["upper"], "failed_units": recorded.get("failed_units", [])})
        result = {"changed": bool(self.actions), "actions": self.actions, "hosts": hosts, "stopped": self.stopped}
        if design:
            result.update(bridge=design["bridge"], data_bridge=design["bridge2"], key=design["key"],
                          shared_dir=design["shared_dir"], gateway=design["gateway"].split("/")[0],
                          data_gateway=design["gateway2"].split("/")[0], base_root=design["base"]["dir"],
                          package_proxy="%s:%d" % (design["gateway"].split("/")[0], PROXY_PORT),
                          power_controller="%s:%d" % (design["gateway"].split("/")[0], POWER_PORT),
                          power_controller_tls="%s:%d" % (design["gateway"].split("/")[0], POWER_TLS_PORT),
                          power_secret=os.path.join(self.state_dir, POWER_SECRET))
            iscsi = design["iscsi"]
            result["iscsi"] = {"portal": iscsi["portal"], "target": iscsi["target"], "luns": iscsi["luns"],
                               "initiator_acl": iscsi["acl"], "netns": design["storage"]["netns"],
                               "tgtd_pid": ((self.state or {}).get("storage") or {}).get("tgtd_pid")}
        return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("action", choices=["up", "down", "proxy", "power"])
    parser.add_argument("--state-dir", default="/var/lib/virtplane-lab")
    parser.add_argument("--hosts", type=int, default=2)
    parser.add_argument("--engine", action="store_true", help="also a host named engine1, at .10")
    parser.add_argument("--without-systemd", default="", help="hosts (comma-separated) that boot without systemd")
    parser.add_argument("--prefix", default="vplab")
    parser.add_argument("--host-prefix", default="hv")
    parser.add_argument("--bridge", default="vplab0")
    parser.add_argument("--subnet", default="10.77.0.0/24")
    parser.add_argument("--data-subnet", default="10.78.0.0/24")
    parser.add_argument("--luns", type=int, default=2, help="LUNs of the lab's iSCSI target")
    parser.add_argument("--lun-size", default="1G", help="size of each LUN: 1G, 512M, ... or bytes")
    parser.add_argument("--cache-dir", default=CACHE_DIR,
                        help="base roots and packages kept for the next lab of this machine")
    parser.add_argument("--mirror", default="http://deb.debian.org/debian")
    parser.add_argument("--security-mirror", default="http://deb.debian.org/debian-security")
    parser.add_argument("--boot-timeout", type=int, default=90, help="seconds a host may take to boot")
    parser.add_argument("--stop-timeout", type=int, default=15, help="seconds a host may take to power off")
    parser.add_argument("--host-memory", type=int, default=1024,
                        help="MiB of this machine's memory the lab counts for each host it boots")
    parser.add_argument("--listen", help="(proxy, power) the address to serve on")
    parser.add_argument("--port", type=int, default=POWER_PORT, help="(power) the port to serve on (0: any)")
    parser.add_argument("--tls-port", type=int, default=POWER_TLS_PORT,
                        help="(power) the HTTPS port, served when STATE_DIR/power.pem exists (0: any)")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    if args.action == "proxy":
        return serve_proxy(args)
    if args.action == "power":
        return serve_power(args)
    lab = None
    try:
        with run_lock(args.state_dir):
            lab = Lab(args)
            result = lab.up() if args.action == "up" else lab.down()
    except (LabError, ValueError) as exc:
        print(json.dumps({"failed": True, "msg": "Lab %s %s: %s" % (
            args.action, "failed" if lab and lab.started else "refused", exc)}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
