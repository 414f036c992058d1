# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Turn this Linux machine into N lab hypervisor hosts, or remove them.

Each lab host is a network + mount + UTS namespace held open by an anchor process:
- its own network namespace, with `eth0` (a veth into the lab bridge) on the management
  subnet and `eth1` (a veth into the second lab bridge) as the "physical" NIC for guest networks;
- its own /etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt,
  bind-mounted from a per-host directory (so several libvirtd coexist);
- its own hostname, resolved by its own /etc/hosts, and an sshd on its address that accepts the lab
  key, so Ansible manages it over SSH like any real host. libvirtd and friends are then the
  hypervisor role's business.

The lab's shared block storage is a userspace iSCSI target (tgt): one tgtd in a network namespace
of its own (<prefix>-storage) at .2 of the data subnet, exporting one target with --luns LUNs
backed by sparse files in STATE_DIR/iscsi (kept across `up` runs, removed by `down`). Every lab
host reaches it over its eth1, e.g. with libvirt's `iscsi-direct` pool.

Everything the lab creates is recorded in STATE_DIR/lab.json, and nothing else is touched: a
bridge, namespace or directory of the same name that the lab did not create is refused.
Output: one JSON object on stdout {"changed", "actions", "hosts", ...}; exit 1 with
{"failed": true, "msg"} on error. `--check` predicts without changing anything.
"""

import argparse
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

MARKER = ".virtplane-lab"
HOST_DIRS = {
    "etc-libvirt": "/etc/libvirt",
    "run-libvirt": "/run/libvirt",
    "lib-libvirt": "/var/lib/libvirt",
    "log-libvirt": "/var/log/libvirt",
    "cache-libvirt": "/var/cache/libvirt",
}
NAME = re.compile(r"[a-z][a-z0-9-]{0,9}")
# The lab's iSCSI target is <IQN_PREFIX>:<lab prefix>; lab hosts name their initiators <IQN_PREFIX>:<host>.
IQN_PREFIX = "iqn.2026-11.dev.virtplane.lab"
ISCSI_PORT = 3260
MAX_LUNS = 32
SIZE = re.compile(r"([0-9]+) *([KMGT]?)(?:i?B)?", re.IGNORECASE)


class LabError(Exception):
    pass


def run(*argv, check=True, capture=True):
    proc = subprocess.run(argv, stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, check=False)
    if check and proc.returncode != 0:
        raise LabError("%s failed: %s" % (" ".join(argv), (proc.stderr or proc.stdout).strip()))
    return proc.stdout if capture else ""


def in_netns(pid, netns):
    """Whether ``pid`` lives in network namespace ``netns`` (a pid number alone may have been reused)."""
    try:
        return os.stat("/proc/%d/ns/net" % pid).st_ino == os.stat(os.path.join("/run/netns", netns)).st_ino
    except (OSError, TypeError):
        return False


def read_pid(path):
    try:
        with open(path) as handle:
            return int(handle.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def copy_directory_tree(source, target):
    """Directories only, with their owners and modes; no files."""
    for current, dirs, _files in os.walk(source):
        for name in dirs:
            src = os.path.join(current, name)
            dst = os.path.join(target, os.path.relpath(src, source))
            info = os.lstat(src)
            if not os.path.isdir(dst):
                os.mkdir(dst)
            os.chown(dst, info.st_uid, info.st_gid)
            os.chmod(dst, info.st_mode & 0o7777)


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


class Lab:
    def __init__(self, args):
        self.args = args
        self.state_dir = args.state_dir
        self.state_file = os.path.join(self.state_dir, "lab.json")
        self.check = args.check
        self.actions = []
        self.state = self._load()

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

    def design(self):
        """Names and addresses of everything the lab is made of."""
        a = self.args
        mgmt = ipaddress.ip_network(a.subnet, strict=True)
        guest = ipaddress.ip_network(a.data_subnet, strict=True)
        if mgmt.prefixlen > 28 or guest.prefixlen > 28:
            raise LabError("subnets must be /28 or larger")
        if mgmt.overlaps(guest):
            raise LabError("subnet %s and data_subnet %s overlap" % (mgmt, guest))
        hosts = []
        for i in range(1, a.hosts + 1):
            name = "%s%d" % (a.host_prefix, i)
            hosts.append({
                "name": name,
                "netns": "%s-%s" % (a.prefix, name),
                "veth": "%s-%s" % (a.prefix, name)[:15],
                "veth2": ("%s2-%s" % (a.prefix, name))[:15],
                "address": str(mgmt.network_address + 10 + i),
                "address2": str(guest.network_address + 10 + i),
                "prefixlen": mgmt.prefixlen,
                "prefixlen2": guest.prefixlen,
                "dir": os.path.join(self.state_dir, "hosts", name),
            })
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
        for tool in ("ip", "nsenter", "unshare", "ssh-keygen", "/usr/sbin/sshd", "tgtd", "tgtadm"):
            if not shutil.which(tool) and not self.check:  # a check runs before the role installs them
                raise LabError("%s is not installed (packages iproute2, util-linux, openssh-server, tgt)" % tool)
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
                if veth in present and host["netns"] not in known_ns:
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
        if not self.owns_dir():
            self.act("create %s" % self.state_dir, self._make_state_dir)
        if self.state is None:
            self.state = {"hosts": []}
        self.state.update({k: design[k] for k in ("prefix", "bridge", "bridge2", "subnet", "data_subnet",
                                                  "shared_dir", "key")})
        self._save()
        if not os.path.exists(design["key"]):
            self.act("create the lab SSH key", run, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                     "virtplane-lab", "-f", design["key"])
        for sub in ("", "images", "lockspace"):
            path = os.path.join(design["shared_dir"], sub)
            if not os.path.isdir(path):
                self.act("create %s" % path, os.makedirs, path, 0o755, True)
        present = links()
        for bridge, gateway in ((design["bridge"], design["gateway"]), (design["bridge2"], design["gateway2"])):
            if bridge not in present:
                self.act("create bridge %s (%s)" % (bridge, gateway), self._make_bridge, bridge, gateway)
            elif present[bridge].get("operstate") == "DOWN" and "UP" not in present[bridge].get("flags", []):
                self.act("bring bridge %s up" % bridge, run, "ip", "link", "set", bridge, "up")
        self._ensure_storage(design)
        wanted = {h["name"] for h in design["hosts"]}
        for old in [h for h in self.state["hosts"] if h["name"] not in wanted]:
            self._remove_host(old)
        for host in design["hosts"]:
            self._ensure_host(host, design)
        self._save()
        return self.report(design)

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
        for host in self.state["hosts"]:
            if host["name"] == name:
                return host
        return None

    def healthy(self, recorded):
        if not recorded or recorded["netns"] not in namespaces():
            return False
        ns = recorded["netns"]
        sshd = read_pid(os.path.join(recorded["dir"], "sshd.pid"))
        # a host made before hosts resolved their own names is rebuilt
        resolves = os.path.exists(os.path.join(recorded["dir"], "hosts"))
        return in_netns(recorded.get("anchor_pid"), ns) and in_netns(sshd, ns) and resolves

    def _ensure_host(self, host, design):
        recorded = self._recorded(host["name"])
        if recorded and self.healthy(recorded) and recorded["address"] == host["address"]:
            return
        if recorded or host["netns"] in namespaces():
            # left over from a killed run (its processes are gone) or changed: rebuild it whole
            self._remove_host(recorded or dict(host, anchor_pid=0))
        self.act("create lab host %s at %s" % (host["name"], host["address"]), self._make_host, host, design)

    def _make_host(self, host, design):
        # recorded first: a run killed half-way leaves a host the next run knows and rebuilds
        host = dict(host, anchor_pid=0)
        self.state["hosts"] = [h for h in self.state["hosts"] if h["name"] != host["name"]] + [host]
        self._save()
        try:
            self._build_host(host, design)
        except (LabError, OSError):
            self._destroy_host(host)
            self.state["hosts"] = [h for h in self.state["hosts"] if h["name"] != host["name"]]
            self._save()
            raise
        self._save()

    def _build_host(self, host, design):
        # pid files and sockets of a host that died are stale: a new host starts with an empty /run
        shutil.rmtree(os.path.join(host["dir"], "run-libvirt"), ignore_errors=True)
        if os.path.exists(os.path.join(host["dir"], "sshd.pid")):
            os.unlink(os.path.join(host["dir"], "sshd.pid"))
        for sub in HOST_DIRS:
            os.makedirs(os.path.join(host["dir"], sub), 0o755, exist_ok=True)
        etc = os.path.join(host["dir"], "etc-libvirt")
        if not os.listdir(etc):
            # a new host starts with the distribution's libvirt configuration, as after installing it
            shutil.copytree("/etc/libvirt", etc, dirs_exist_ok=True, symlinks=True)
            # ... and with the directories the packages made (owners matter: libvirt-qemu writes there)
            for sub in ("lib-libvirt", "log-libvirt", "cache-libvirt"):
                copy_directory_tree(HOST_DIRS[sub], os.path.join(host["dir"], sub))
        self._write_sshd_config(host, design)
        ns = host["netns"]
        run("ip", "netns", "add", ns)
        for veth, peer, bridge, address, prefixlen in (
                (host["veth"], "eth0", design["bridge"], host["address"], host["prefixlen"]),
                (host["veth2"], "eth1", design["bridge2"], host["address2"], host["prefixlen2"])):
            run("ip", "link", "add", veth, "type", "veth", "peer", "name", peer, "netns", ns)
            run("ip", "link", "set", veth, "master", bridge, "up")
            run("ip", "-n", ns, "addr", "add", "%s/%d" % (address, prefixlen), "dev", peer)
            run("ip", "-n", ns, "link", "set", peer, "up")
        run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "-n", ns, "route", "add", "default", "via", design["gateway"].split("/")[0])
        if design["storage"]["netns"] in namespaces():
            # a rebuilt host has a new MAC behind its data address: the iSCSI portal must not remember the old one
            run("ip", "-n", design["storage"]["netns"], "neigh", "flush", "to", host["address2"], check=False)
        mounts = " ".join("mkdir -p %s && mount --bind %s %s &&" % (target, os.path.join(host["dir"], sub), target)
                          for sub, target in HOST_DIRS.items())
        # a host resolves its own name, as an installed one does: else libvirt asks DNS, which no lab
        # host reaches, and waits 10 s at every guest start
        hosts_file = os.path.join(host["dir"], "hosts")
        with open(hosts_file, "w") as handle:
            handle.write("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n%s\t%s\n"
                         % (host["address"], host["name"]))
        mounts += " mount --bind %s /etc/hosts &&" % hosts_file
        script = "%s hostname %s && exec sleep infinity" % (mounts, host["name"])
        anchor = subprocess.Popen(
            ["ip", "netns", "exec", ns, "unshare", "--mount", "--uts", "--propagation", "private", "--",
             "/bin/sh", "-c", script],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
            text=True)
        host["anchor_pid"] = self._wait_for_anchor(anchor, host)
        self.nsenter(host, "/usr/sbin/sshd", "-f", os.path.join(host["dir"], "sshd_config"))
        self._wait_for_ssh(host)

    def _wait_for_anchor(self, anchor, host):
        """The pid of `sleep infinity` once the mounts and hostname are in place."""
        deadline = time.time() + 10
        while time.time() < deadline:
            if anchor.poll() is not None:
                raise LabError("lab host %s did not start: %s" % (host["name"], anchor.stderr.read().strip()))
            for pid in run("pgrep", "-s", str(anchor.pid), "-x", "sleep", check=False).split():
                return int(pid)
            time.sleep(0.05)
        raise LabError("lab host %s did not start within 10 s" % host["name"])

    def _wait_for_ssh(self, host):
        """Until sshd answers at the host's address from this machine, as Ansible will reach it."""
        # a rebuilt host has a new MAC behind an old address: forget the old neighbour entry
        run("ip", "neigh", "flush", "to", host["address"], check=False)
        deadline = time.time() + 30
        while time.time() < deadline:
            if in_netns(read_pid(os.path.join(host["dir"], "sshd.pid")), host["netns"]):
                try:
                    socket.create_connection((host["address"], 22), timeout=1).close()
                    return
                except OSError:
                    pass
            time.sleep(0.1)
        raise LabError("sshd of lab host %s does not answer at %s:22" % (host["name"], host["address"]))

    def _write_sshd_config(self, host, design):
        key = os.path.join(host["dir"], "ssh_host_ed25519_key")
        if not os.path.exists(key):
            run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key)
        os.makedirs("/run/sshd", 0o755, exist_ok=True)  # privilege separation directory
        with open(os.path.join(host["dir"], "sshd_config"), "w") as handle:
            handle.write("\n".join([
                "# lab host %s: reachable with the lab key only" % host["name"],
                "ListenAddress %s" % host["address"],
                "HostKey %s" % key,
                "PidFile %s" % os.path.join(host["dir"], "sshd.pid"),
                "PermitRootLogin prohibit-password",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "AuthorizedKeysFile %s.pub" % design["key"],
                "Subsystem sftp internal-sftp",
                "AcceptEnv LANG LC_*",
                "",
            ]))

    def nsenter(self, host, *argv):
        return run("nsenter", "--target", str(host["anchor_pid"]), "--mount", "--uts", "--net", *argv)

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
                with open(log_path, errors="replace") as log:
                    tail = log.read().strip().splitlines()[-3:]
                raise LabError("tgtd did not start (see %s): %s" % (log_path, " / ".join(tail)))
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

    def _remove_host(self, host):
        self.act("remove lab host %s" % host["name"], self._destroy_host, host)
        if not self.check:
            self.state["hosts"] = [h for h in self.state["hosts"] if h["name"] != host["name"]]
            self._save()

    def _destroy_host(self, host):
        ns = host["netns"]
        if ns in namespaces():
            kill_netns(ns)  # everything running in the host: daemons, guests, the anchor
            run("ip", "netns", "del", ns, check=False)
        present = links()
        for veth in (host.get("veth"), host.get("veth2")):
            if veth and veth in present:
                run("ip", "link", "del", veth, check=False)

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
        state = self.state or {"hosts": []}
        for host in list(state["hosts"]):
            self._remove_host(host)
        if state.get("storage"):
            self.act("remove lab storage %s (tgtd, iSCSI target)" % state["storage"]["netns"],
                     self._destroy_storage, state["storage"])
        present = links()
        # the recorded bridges, and this run's names too: a run killed before recording them
        names = (state.get("bridge"), state.get("bridge2"), self.args.bridge, self.args.bridge + "s")
        for bridge in dict.fromkeys(names):
            if bridge and bridge in present and present[bridge].get("ifalias") == self.alias:
                self.act("remove bridge %s" % bridge, run, "ip", "link", "del", bridge)
        self.act("remove %s" % self.state_dir, shutil.rmtree, self.state_dir)
        return self.report(None)

    # --- report ------------------------------------------------------------------------

    def report(self, design):
        hosts = []
        if design:
            for host in design["hosts"]:
                recorded = self._recorded(host["name"]) or host
                hosts.append({"name": host["name"], "address": host["address"], "data_address": host["address2"],
                              "netns": host["netns"], "anchor_pid": recorded.get("anchor_pid"),
                              "dir": host["dir"]})
        result = {"changed": bool(self.actions), "actions": self.actions, "hosts": hosts}
        if design:
            result.update(bridge=design["bridge"], data_bridge=design["bridge2"], key=design["key"],
                          shared_dir=design["shared_dir"], gateway=design["gateway"].split("/")[0],
                          data_gateway=design["gateway2"].split("/")[0])
            iscsi = design["iscsi"]
            result["iscsi"] = {"portal": iscsi["portal"], "target": iscsi["target"], "luns": iscsi["luns"],
                               "initiator_acl": iscsi["acl"], "netns": design["storage"]["netns"],
                               "tgtd_pid": ((self.state or {}).get("storage") or {}).get("tgtd_pid")}
        return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--state-dir", default="/var/lib/virtplane-lab")
    parser.add_argument("--hosts", type=int, default=2)
    parser.add_argument("--prefix", default="vplab")
    parser.add_argument("--host-prefix", default="hv")
    parser.add_argument("--bridge", default="vplab0")
    parser.add_argument("--subnet", default="10.77.0.0/24")
    parser.add_argument("--data-subnet", default="10.78.0.0/24")
    parser.add_argument("--luns", type=int, default=2, help="LUNs of the lab's iSCSI target")
    parser.add_argument("--lun-size", default="1G", help="size of each LUN: 1G, 512M, ... or bytes")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    try:
        lab = Lab(args)
        result = lab.up() if args.action == "up" else lab.down()
    except (LabError, ValueError) as exc:
        print(json.dumps({"failed": True, "msg": "Lab %s refused: %s" % (args.action, exc)}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
