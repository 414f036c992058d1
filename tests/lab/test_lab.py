"""The lab for real: lab hosts that are whole Debian machines (their own root, systemd, sshd), the
hypervisor role with and without systemd on them, the engine on a lab host of its own, guests that
boot and answer ping, an iSCSI target whose LUNs every host sees.

The tests build a lab of their own (prefix vptest, subnets 10.79/10.80, its own state directory)
so that the demo's lab on this machine is left alone, and remove it at the end: `engine1` runs the
engine role (PostgreSQL from apt, under systemd), hv1 boots with systemd, hv2 without (a minimal
init that runs sshd only, as in a container).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

import pytest

from ansible_collections.virtplane.kvm.plugins.module_utils.virt._seed import nocloud_seed
from tests.support.lab import SSH_OPTIONS, heartbeats, host_file, in_host, lab_state, read_console, wait_for_console
from tests.support.lab import guest_xml as lab_guest_xml
from tests.support.playbook import ROOT, run_plays

STATE_DIR = "/var/lib/virtplane-lab-test"
LAB_VARS = {"lab_prefix": "vptest", "lab_bridge": "vptest0", "lab_subnet": "10.79.0.0/24",
            "lab_data_subnet": "10.80.0.0/24", "lab_state_dir": STATE_DIR, "lab_hosts": 2, "lab_engine": True,
            "lab_hosts_without_systemd": ["hv2"]}
HOSTS = {"hv1": "10.79.0.11", "hv2": "10.79.0.12"}
ENGINE = "10.79.0.10"
KEY = os.path.join(STATE_DIR, "id_ed25519")
IMAGE = os.path.join(STATE_DIR, "shared", "images", "lab-guest")
LAB_TOOL = os.path.join(ROOT, "roles", "lab", "files", "virtplane_lab.py")
# the test lab's iSCSI target: tgtd in vptest-storage at .2 of the data subnet, 2 LUNs of 1 GiB
ISCSI_PORTAL = "10.80.0.2:3260"
ISCSI_TARGET = "iqn.2026-11.dev.virtplane.lab:vptest"
GIB = 1024 ** 3
TOOL_ARGS = ("--state-dir", STATE_DIR, "--prefix", "vptest", "--bridge", "vptest0", "--subnet", "10.79.0.0/24",
             "--data-subnet", "10.80.0.0/24", "--engine", "--without-systemd", "hv2")

# one pytest-xdist worker runs every lab test, first of all (the group is the largest): two labs at once fight
# over two cores and made the whole run slower (each module's lab is built once, by its own fixture)
pytestmark = [pytest.mark.lab, pytest.mark.xdist_group("lab")]


def lab_play(**extra):
    return {"name": "lab", "hosts": "lab_machine", "gather_facts": False, "roles": ["virtplane.kvm.lab"],
            "vars": dict(LAB_VARS, **extra)}


def hypervisor_play():
    return {"name": "hypervisors", "hosts": "hypervisors", "gather_facts": False,
            "roles": ["virtplane.kvm.hypervisor"]}


def ssh(address, command, **kwargs):
    return in_host(KEY, address, command, **kwargs)


@pytest.fixture(scope="module")
def inventory(tmp_path_factory):
    """The test lab's inventory, shaped like inventories/lab: the engine is a lab host, reached over SSH."""
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    # this machine (the lab bridge's gateway) reads the engine database over TLS, as the demo's does
    client_dir = str(tmp_path_factory.mktemp("engine-client") / "lab")
    data = {"all": {"children": {
        "lab_machine": {"hosts": {"localhost": local}},
        "lab_hosts": {
            "children": {
                "engine": {"hosts": {"engine1": {"ansible_host": ENGINE, "engine_db_clients": ["10.79.0.1/32"],
                                                 "engine_client_dir": client_dir}}},
                "hypervisors": {
                    "hosts": {name: {"ansible_host": address} for name, address in HOSTS.items()},
                    "vars": {"hypervisor_libvirt_transport": "tcp", "hypervisor_allow_plain_tcp": True,
                             "hypervisor_cluster": "lab", "hypervisor_lockspace_dir": STATE_DIR + "/shared/lockspace",
                             "hypervisor_probe_image_dir": IMAGE, "hypervisor_machine_shared_by": 2}}},
            "vars": {"ansible_user": "root", "ansible_ssh_private_key_file": KEY,
                     "ansible_ssh_common_args": " ".join(SSH_OPTIONS[:6]),
                     "ansible_python_interpreter": "/usr/bin/python3"}}}}}
    path = tmp_path_factory.mktemp("inventory") / "hosts.yml"
    path.write_text(json.dumps(data))
    return str(path)


def lab_tool(*args, user=None, tool_args=TOOL_ARGS):
    tool = LAB_TOOL
    if user:
        # another user cannot read this checkout (it may sit in a private directory): give it a copy
        copy_dir = tempfile.mkdtemp(prefix="virtplane-labtool-")
        os.chmod(copy_dir, 0o755)
        tool = shutil.copy(LAB_TOOL, copy_dir)
    argv = ["/usr/bin/python3", tool, *args, *tool_args]
    if user:
        argv = ["runuser", "-u", user, "--"] + argv
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    finally:
        if user:
            shutil.rmtree(os.path.dirname(tool))
    return json.loads(proc.stdout)


def cgroups(prefix="vptest-"):
    """The test lab's cgroups, wherever they are: the lab makes them under the cgroup of whoever runs it."""
    found = []
    for hierarchy in ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        for directory, subdirs, _files in os.walk(hierarchy):
            found += [os.path.join(directory, n) for n in subdirs if n.startswith(prefix)]
            subdirs[:] = [n for n in subdirs if not n.startswith(prefix)]  # a lab cgroup's insides are its own
    return sorted(set(found))


def leftovers(state_dir=STATE_DIR):
    """Whatever of the test lab exists on this machine."""
    found = []
    if os.path.isdir("/run/netns"):
        found += [n for n in os.listdir("/run/netns") if n.startswith("vptest-")]
    links = json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True, text=True, check=True).stdout)
    found += [link["ifname"] for link in links if link["ifname"].startswith("vptest")]
    if os.path.exists(state_dir):
        found.append(state_dir)
    procs = subprocess.run(["pgrep", "-f", state_dir], capture_output=True, text=True, check=False).stdout.split()
    with open("/proc/self/mountinfo") as handle:
        found += ["mount %s" % line.split()[4] for line in handle if state_dir in line.split()[4]]
    return found + ["process %s" % p for p in procs] + cgroups()


@pytest.fixture(scope="module")
def lab(inventory):
    """A test lab: the engine role on its engine host, hv1 and hv2 configured by the hypervisor role and
    registered in that engine."""
    lab_tool("down")  # a previous run that was killed may have left it half-made
    run = run_plays([lab_play()], inventory=inventory)
    assert run.rc == 0, run.output[-4000:]
    report = json.loads(run["virtplane.kvm.lab : Build or repair the lab"]["stdout"])
    run = run_plays([
        {"name": "engine", "hosts": "engine", "roles": ["virtplane.kvm.engine"]},
        {"import_playbook": os.path.join(ROOT, "playbooks", "engine_client.yml")},
        {"name": "engine objects", "hosts": "engine", "gather_facts": False, "tasks": [
            {"virtplane.kvm.datacenter": {"name": "lab"}},
            {"virtplane.kvm.cluster": {"name": "lab", "datacenter": "lab"}}]},
        hypervisor_play()], inventory=inventory)
    assert run.rc == 0, run.output[-4000:]
    yield {"inventory": inventory, "first_run": run, "report": report}
    lab_tool("down")


def host_info(lab, refresh=False, timeout=15):
    """The engine's hosts; with ``refresh``, each host is checked first (host state refreshed)."""
    tasks = [{"name": "info", "virtplane.kvm.host_info": {}}]
    if refresh:
        tasks.insert(0, {"name": "refresh", "loop": sorted(HOSTS), "virtplane.kvm.host": {
            "name": "{{ item }}", "state": "refreshed", "timeout": timeout}})
    run = run_plays([{"hosts": "engine", "gather_facts": False, "tasks": tasks}], inventory=lab["inventory"])
    info = dict(run["info"])
    if refresh:
        assert not run["refresh"].get("failed"), run.output[-3000:]
        info["changed"] = run["refresh"]["changed"]
    return info


# --- bad input first: refused before anything exists -------------------------------------

@pytest.mark.parametrize("extra, message", [
    ({"lab_hosts": 99}, "this machine can hold 1 to"),
    ({"lab_bridge": "lo"}, "a network interface named lo exists and was not made by the lab"),
    ({"lab_subnet": "127.0.0.0/24"}, "subnet 127.0.0.0/24 collides with 127.0.0.1/8 on lo"),
    ({"lab_host_memory_mib": 1024 ** 2}, "lab hosts engine1, hv1, hv2 need 3145728 MiB of memory (host_memory "
                                         "1048576 MiB each) and this machine has"),
    ({"lab_hosts_without_systemd": ["hv3"]}, "without_systemd names hv3, which is no host of this lab"),
    ({"lab_mirror": "https://deb.debian.org/debian"}, "mirror 'https://deb.debian.org/debian' must be a plain "
                                                      "http:// URL of the Debian archive"),
    ({"lab_mirror": "http://deb.debian.org/debian\n"}, "must be a plain http:// URL"),
    ({"lab_boot_timeout": -1}, "boot_timeout -1 is out of range (5 to 900)"),
    ({"lab_mirror": "http://deb.debian.org:99999/debian"}, "must be a plain http:// URL"),
    ({"lab_host_prefix": "engine"}, "prefix 'vptest' and host_prefix 'engine' give two lab hosts the host name "
                                    "engine1"),
    ({"lab_host_prefix": "hypervisor"}, "give two lab hosts the network interface name vptest-hypervis (interface "
                                        "names are cut at 15 characters)"),
    ({"lab_cache_dir": "/var/cache/vp;touch /tmp/x"}, "cache_dir '/var/cache/vp;touch /tmp/x' must be an absolute "
                                                      "path of letters"),
    ({"lab_state_dir": "/var/lib/vptest,upperdir=/etc"}, "state_dir '/var/lib/vptest,upperdir=/etc' must be an "
                                                         "absolute path of letters"),
])
def test_bad_input_is_refused_before_anything_changes(inventory, extra, message):
    lab_tool("down")
    for check in (True, False):
        run = run_plays([lab_play(lab_guest_image=False, **extra)], inventory=inventory, check=check)
        assert run.rc != 0
        refusal = run["virtplane.kvm.lab : Explain a refusal"]
        assert message in refusal["msg"], refusal["msg"]
        assert leftovers() == []


def test_a_base_root_that_cannot_be_built_leaves_nothing_behind(inventory):
    """No way to the package mirror: .invalid names never resolve, so nothing is sent anywhere."""
    lab_tool("down")
    run = run_plays([lab_play(lab_guest_image=False, lab_mirror="http://mirror.invalid/debian")],
                    inventory=inventory)
    assert run.rc != 0
    failure = run["virtplane.kvm.lab : Explain a failure"]["msg"]
    assert failure.startswith("Lab up failed: the lab's base root could not be built (debootstrap bookworm from "
                              "http://mirror.invalid/debian): "), failure
    assert "mirror.invalid" in failure.split("): ", 1)[1], failure  # the cause, from debootstrap's own words
    assert leftovers() == []


def test_a_disk_too_small_for_the_lab_is_refused_before_anything_is_made(tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(small)], check=True)
    try:
        state_dir = str(small / "lab")
        args = [a if a != STATE_DIR else state_dir for a in TOOL_ARGS]
        result = lab_tool("up", tool_args=args)
        assert result["msg"].startswith("Lab up refused: the lab needs about 3400 MiB of disk in %s (its base root "
                                        "700 MiB, 3 new hosts 900 MiB each) and " % state_dir), result["msg"]
        assert os.listdir(str(small)) == [] and leftovers(state_dir) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_refuses_a_directory_it_did_not_make():
    os.makedirs(STATE_DIR)
    try:
        with open(os.path.join(STATE_DIR, "precious"), "w") as handle:
            handle.write("not the lab's")
        result = lab_tool("up")
        assert result["msg"] == ("Lab up refused: directory %s exists and was not made by the lab; choose another "
                                 "lab state dir" % STATE_DIR)
        assert os.listdir(STATE_DIR) == ["precious"]
    finally:
        subprocess.run(["rm", "-rf", STATE_DIR], check=True)


def test_refuses_a_namespace_it_did_not_make():
    subprocess.run(["ip", "netns", "add", "vptest-hv2"], check=True)
    try:
        result = lab_tool("up")
        assert result["msg"] == "Lab up refused: network namespace vptest-hv2 exists and was not made by the lab"
        assert not os.path.exists(STATE_DIR)
    finally:
        subprocess.run(["ip", "netns", "del", "vptest-hv2"], check=True)


def test_needs_root():
    result = lab_tool("up", user="nobody")
    assert result["msg"].startswith("Lab up refused: the lab needs root")
    assert leftovers() == []


def test_one_run_at_a_time():
    import fcntl
    import hashlib

    lock = "/run/lock/virtplane-lab-%s.lock" % hashlib.sha256(STATE_DIR.encode()).hexdigest()[:16]
    with open(lock, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # as a run under way holds it
        handle.seek(0)
        handle.truncate()
        handle.write("4242")
        handle.flush()
        for args in (("up",), ("up", "--check"), ("down",)):
            result = lab_tool(*args)
            assert result["msg"] == "Lab %s refused: another run of the lab tool on %s is under way (pid 4242)" \
                % (args[0], STATE_DIR), result
    assert leftovers() == []


# --- the lab itself -----------------------------------------------------------------------

def test_up_again_changes_nothing(lab):
    again = run_plays([lab_play()], inventory=lab["inventory"])
    assert again.rc == 0 and again.changed_tasks == []
    check = run_plays([lab_play()], inventory=lab["inventory"], check=True)
    assert check.rc == 0 and check.changed_tasks == []


def test_hosts_are_whole_machines_on_one_base_root(lab):
    report = lab["report"]
    base = report["base_root"]
    assert os.path.isdir(os.path.join(base, "usr", "lib", "systemd"))
    assert sorted(os.listdir(os.path.dirname(base))) == ["build.log", os.path.basename(base)]  # one base root
    identities = set()
    for name, address in dict(HOSTS, engine1=ENGINE).items():
        out = ssh(address, "hostname; ps -o comm= -p 1; findmnt -n -o FSTYPE /; cat /etc/machine-id; "
                           "systemctl is-system-running; ls /dev").stdout.split("\n")
        assert out[0] == name
        assert out[1] == ("virtplane-lab-i" if name == "hv2" else "systemd")  # PID 1 of its own namespace
        assert out[2] == "overlay"  # its own copy-on-write root over the base root
        identities.add(out[3])
        # systemd is up (degraded would name failed units in the report); hv2 has no init system
        assert out[4] == ("offline" if name == "hv2" else "running"), out
        # its own /dev, with what a hypervisor needs and nothing else of this machine's
        devices = set(out[5:])
        assert {"null", "urandom", "tty", "pts", "shm"} <= devices, devices
        assert not devices & {"vda", "sda", "mem", "kmsg", "console"}, devices
        assert os.path.exists("/dev/kvm") <= ("kvm" in devices)
        # the kernel's settings are this machine's: read-only, but for its own network namespace's
        # (each written with the value it has, so that nothing changes even if the write went through)
        sysctl = ssh(address, "v=$(cat /proc/sys/fs/protected_fifos); (echo $v > /proc/sys/fs/protected_fifos) "
                              "2>&1; v=$(cat /proc/sys/net/ipv4/ip_forward); echo $v > /proc/sys/net/ipv4/ip_forward "
                              "&& echo net-written", check=False).stdout
        assert "Read-only file system" in sysctl and sysctl.endswith("net-written\n"), sysctl
    assert len(identities) == 3  # each host its own machine id (the libvirt host UUID comes from it)
    assert [(h["name"], h["init"], h["failed_units"]) for h in report["hosts"]] == [
        ("engine1", "systemd", []), ("hv1", "systemd", []), ("hv2", "none", [])]
    # the shared directory is at the same path in every host: what one writes, the others read
    shared = os.path.join(STATE_DIR, "shared", "from-hv1")
    ssh(HOSTS["hv1"], "echo written-by-hv1 > %s" % shared)
    try:
        assert ssh(HOSTS["hv2"], "cat %s" % shared).stdout == "written-by-hv1\n"
    finally:
        os.unlink(shared)


def test_packages_come_with_apt_inside_each_host(lab):
    for address in HOSTS.values():
        # installed in the host by the hypervisor role, not inherited from this machine
        history = ssh(address, "cat /var/log/apt/history.log").stdout
        assert "libvirt-daemon-system" in history and "qemu-system-x86" in history
    assert "postgresql" in ssh(ENGINE, "cat /var/log/apt/history.log").stdout
    # through the lab's proxy (apt's configuration in the host), which relays to the Debian mirror
    # and nothing else: it refuses another host without ever connecting to it
    refused = ssh(HOSTS["hv1"], "eval $(apt-config shell http_proxy Acquire::http::Proxy); export http_proxy; "
                                "python3 -c \"import urllib.request as u; "
                                "u.urlopen('http://example.com/', timeout=10)\"",
                  check=False)
    assert "403" in refused.stderr and "Not a Debian mirror of this lab" in refused.stderr, refused.stderr
    # what would get past a careless proxy: the mirror's name as a user name, another port of the
    # mirror, a port that is no port, a tunnel; and what went through it: apt's requests
    probe = os.path.join(STATE_DIR, "shared", "proxy-probe.py")
    with open(probe, "w") as handle:
        handle.write(PROXY_PROBE)
    try:
        answers = ssh(HOSTS["hv1"], "eval $(apt-config shell proxy Acquire::http::Proxy); python3 %s $proxy"
                      % probe).stdout.split()
    finally:
        os.unlink(probe)
    assert answers == ["403", "403", "400", "405"], answers
    with open(os.path.join(STATE_DIR, "proxy.log")) as handle:
        relayed = handle.read()
    assert '"GET http://deb.debian.org/debian/pool/main/libv' in relayed
    assert "example.com" in relayed and '"GET http://example.com/ HTTP/1.1" 403' in relayed


PROXY_PROBE = """
import http.client, sys, urllib.parse
proxy = urllib.parse.urlsplit(sys.argv[1])
for method, target in (("GET", "http://deb.debian.org@example.com/debian/"),
                       ("GET", "http://deb.debian.org:8080/debian/"),
                       ("GET", "http://deb.debian.org:99999/debian/"),
                       ("CONNECT", "deb.debian.org:443")):
    conn = http.client.HTTPConnection(proxy.hostname, proxy.port, timeout=10)
    conn.request(method, target)
    print(conn.getresponse().status)
    conn.close()
"""


def test_daemons_run_under_systemd_and_without_it(lab):
    hv1 = ssh(HOSTS["hv1"], "systemctl is-active libvirtd virtlogd virtlockd ssh; "
                            "systemctl is-enabled libvirtd virtlogd.socket virtlockd.socket ssh libvirtd.socket "
                            "libvirtd-ro.socket libvirtd-admin.socket libvirtd-tcp.socket libvirtd-tls.socket; "
                            "systemctl show -p MainPID --value libvirtd; pgrep -x libvirtd; "
                            "ss -ltnH 'sport = 16509'", check=False).stdout.split()
    assert hv1[:4] == ["active"] * 4, hv1
    # libvirtd listens by itself on the host's address (its sockets masked: no socket activation)
    assert hv1[4:13] == ["enabled"] * 4 + ["masked"] * 5, hv1
    assert hv1[13] == hv1[14]  # the libvirtd that runs is systemd's unit
    assert "10.79.0.11:16509" in hv1[15:]
    # the package's own configuration file keeps its other lines: one line is the role's
    default = ssh(HOSTS["hv1"], "cat /etc/default/libvirtd").stdout
    assert [line for line in default.splitlines() if line.startswith("LIBVIRTD_ARGS=")] == \
        ['LIBVIRTD_ARGS="--listen"'], default
    assert "# Customizations for the libvirtd.service systemd unit" in default, default
    hv2 = ssh(HOSTS["hv2"], "test ! -e /run/systemd/system && /usr/local/sbin/virtplane-service status "
                            "libvirtd virtlogd virtlockd").stdout.split("\n")
    assert hv2[:3] == ["libvirtd running", "virtlogd running", "virtlockd running"]
    # the engine host: PostgreSQL from apt, run by systemd, and the monitor service, which holds the lease
    engine = ssh(ENGINE, "systemctl is-active postgresql@15-main; systemctl is-enabled postgresql; "
                         "pg_lsclusters --no-header").stdout.split("\n")
    assert engine[:2] == ["active", "enabled"] and "online" in engine[2], engine
    monitor = ssh(ENGINE, "systemctl is-active virtplane-monitor; systemctl is-enabled virtplane-monitor; cd /tmp; "
                          "runuser -u postgres -- psql -d virtplane -Atc 'SELECT holder FROM monitor_lease'")
    assert monitor.stdout.split("\n")[:2] == ["active", "enabled"], monitor.stdout
    assert monitor.stdout.split("\n")[2].startswith("engine1:"), monitor.stdout


def test_the_engine_database_takes_tls_clients_it_names_and_the_inventory_plugin_lists_the_lab(lab):
    """engine_db_clients: this machine reads the engine on its lab host over TLS (a certificate of the engine's CA,
    verified), never in clear; engine_client.yml left here what ansible-inventory needs."""
    import psycopg

    with open(lab["inventory"]) as handle:
        client_dir = json.load(handle)["all"]["children"]["lab_hosts"]["children"]["engine"]["hosts"]["engine1"][
            "engine_client_dir"]
    assert oct(os.stat(client_dir).st_mode & 0o777) == "0o700"
    assert oct(os.stat(os.path.join(client_dir, "password")).st_mode & 0o077) == "0o0"
    with open(os.path.join(client_dir, "password")) as handle:
        password = handle.read().strip()
    login = {"host": ENGINE, "port": 5432, "dbname": "virtplane", "user": "virtplane", "password": password,
             "connect_timeout": 10}
    with psycopg.connect(sslmode="verify-full", sslrootcert=os.path.join(client_dir, "cacert.pem"), **login) as conn:
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(sslmode="disable", **login)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, "build", "collections"),
               ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_INVENTORY_UNPARSED_FAILED="true",
               ANSIBLE_NOCOLOR="1")
    graph = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-inventory"), "-i",
                            os.path.join(client_dir, "engine.virtplane.yml"), "--graph"], env=env, cwd=ROOT,
                           capture_output=True, text=True, check=False)
    assert graph.returncode == 0, graph.stderr
    assert re.search(r"@hypervisors_lab:\n\s+\|\s+\|--hv1\n\s+\|\s+\|--hv2\n", graph.stdout), graph.stdout
    assert password not in graph.stdout + graph.stderr


def test_a_new_recipe_builds_a_new_base_root_and_remakes_the_hosts(lab):
    # the same archive, another URL: another recipe
    actions = lab_tool("up", "--check", "--mirror", "http://deb.debian.org/debian/")["actions"]
    assert actions[0].startswith("build the base root "), actions
    assert actions[0].split()[4] != os.path.basename(lab["report"]["base_root"])
    # the proxy (it relays to the mirrors of the recipe) and each host made again, and nothing else:
    # what the real run would do
    assert actions[1:3] == ["stop the old package proxy", "start the package proxy at 10.79.0.1:3142"], actions
    assert actions[3:] == [step for name, address in (("engine1", ENGINE), ("hv1", HOSTS["hv1"]),
                                                      ("hv2", HOSTS["hv2"]))
                           for step in ("remove lab host %s (made on an older base root)" % name,
                                        "create lab host %s at %s" % (name, address))], actions
    assert lab_tool("up", "--check")["actions"] == []  # the check changed nothing


def test_hosts_answer_over_ssh_with_their_own_libvirt(lab):
    for name, address in HOSTS.items():
        out = ssh(address, "hostname; virsh -c qemu:///system hostname; "
                           "getent ahostsv4 $(hostname) | awk 'NR == 1 {print $1}'; "
                           "cat /etc/libvirt/virtplane-domain-type", timeout=30).stdout.split()
        assert out[0] == name and out[1] == name
        # its own name resolves without DNS, which no lab host reaches (libvirt looks it up at each start)
        assert out[2] == address
        assert out[3] in ("kvm", "qemu:")
    uuids = set()
    for address in HOSTS.values():
        libvirt = __import__("libvirt")
        conn = libvirt.open("qemu+tcp://%s/system" % address)
        uuids.add(ET.fromstring(conn.getCapabilities()).findtext("host/uuid"))
        conn.close()
    assert len(uuids) == 2  # each host its own UUID, or libvirt refuses migrations between them


def test_hypervisor_role_registered_both_hosts_up_and_is_idempotent(lab):
    hosts = host_info(lab, refresh=True)
    assert not hosts["changed"]
    assert [(h["name"], h["status"], h["libvirt_uri"]) for h in hosts["hosts"]] == [
        ("hv1", "Up", "qemu+tcp://10.79.0.11/system"), ("hv2", "Up", "qemu+tcp://10.79.0.12/system")]
    for host in hosts["hosts"]:
        assert host["domain_type"] in ("kvm", "qemu") and host["hypervisor_type"] == "QEMU"
        assert host["cpu_count"] >= 1 and host["memory_mib"] > 0 and host["numa_cells"]
    # both run on this one machine: each schedules its share, less its own reserve, never the whole machine
    # (libvirt inside a lab host may report less than the machine, and not always the same: the lesser counts)
    machine_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 1024 ** 2
    for host in hosts["hosts"]:
        assert host["schedulable_memory_mib"] == machine_mib // 2, host
        assert host["capacity"] == {"memory_mib": min(host["memory_mib"], machine_mib // 2) - 256,
                                    "cpus": max(1, os.cpu_count() // 2)}, host
    assert sum(h["capacity"]["memory_mib"] for h in hosts["hosts"]) < machine_mib
    for address in HOSTS.values():
        # usable by QEMU's group (the host's own /dev/kvm): else libvirt re-probes QEMU at every guest start
        kvm = ssh(address, "test ! -e /dev/kvm || stat -c '%G %a' /dev/kvm").stdout.strip()
        assert kvm in ("", "kvm 660"), kvm
    again = run_plays([{"name": "engine", "hosts": "engine", "roles": ["virtplane.kvm.engine"]},
                       {"import_playbook": os.path.join(ROOT, "playbooks", "engine_client.yml")}, hypervisor_play()],
                      inventory=lab["inventory"])
    assert again.rc == 0, again.output[-3000:]
    assert again.changed_tasks == []
    # the hosts under systemd held what the last run recorded: their setup was skipped; hv2 (no systemd) is set
    # up at every run
    assert task_status(again, ENGINE_SETUP, "engine1") == "skipped"
    assert task_status(again, HYPERVISOR_SETUP, "hv1") == "skipped"
    assert task_status(again, HYPERVISOR_SETUP, "hv2") == "ok"


ENGINE_SETUP = ("virtplane.kvm.engine : Set up the engine host (PostgreSQL, the engine database, the CA, network "
                "clients, the monitor)")
HYPERVISOR_SETUP = "virtplane.kvm.hypervisor : Set up the host (packages, libvirt, QEMU and virtlockd, TLS, daemons)"


def task_status(run, task, host):
    statuses = [r["result"]["_status"] for r in run.results if r["task"] == task and r["host"] == host]
    assert statuses, "%s did not run on %s: %s" % (task, host, run.output[-3000:])
    return statuses[-1]


def test_a_host_changed_by_hand_is_set_up_again_then_skipped(lab):
    """What the roles recorded is checked at each run: a file edited by hand, a file's mode, a stopped service and a
    new input each make the role set the host up again (and repair it); the next run skips the setup again."""
    plays = [{"name": "engine", "hosts": "engine", "roles": ["virtplane.kvm.engine"]}, hypervisor_play()]
    ssh(HOSTS["hv1"], "echo '# edited by hand' >> /etc/libvirt/qemu.conf; systemctl stop virtlockd.service")
    ssh(ENGINE, "chmod 0644 /etc/virtplane/monitor.json")
    check = run_plays(plays, inventory=lab["inventory"], check=True)
    assert check.rc == 0, check.output[-3000:]
    hv1 = [r["result"] for r in check.results
           if r["task"] == "virtplane.kvm.hypervisor : Tell whether the host still holds what the role set up"
           and r["host"] == "hv1"][0]
    assert not hv1["holds"]
    assert "/etc/libvirt/qemu.conf: content" in hv1["differences"], hv1
    assert "unit virtlockd.service: ActiveState inactive, recorded active" in hv1["differences"], hv1
    # check mode changes nothing: the check says what the run will repair
    assert "edited by hand" in ssh(HOSTS["hv1"], "cat /etc/libvirt/qemu.conf").stdout

    run = run_plays(plays, inventory=lab["inventory"])
    assert run.rc == 0, run.output[-3000:]
    changed = {(r["task"], r["host"]) for r in run.results if r["result"].get("changed")}
    assert ("virtplane.kvm.hypervisor : QEMU configuration (lock manager, migration address and ports)",
            "hv1") in changed, changed
    assert ("virtplane.kvm.engine : The monitor's configuration", "engine1") in changed, changed
    assert "edited by hand" not in ssh(HOSTS["hv1"], "cat /etc/libvirt/qemu.conf").stdout
    assert ssh(HOSTS["hv1"], "systemctl is-active virtlockd.service").stdout.strip() == "active"
    assert ssh(ENGINE, "stat -c %a /etc/virtplane/monitor.json").stdout.strip() == "600"

    again = run_plays(plays, inventory=lab["inventory"])
    assert again.rc == 0 and again.changed_tasks == [], again.output[-3000:]
    assert task_status(again, ENGINE_SETUP, "engine1") == "skipped"
    assert task_status(again, HYPERVISOR_SETUP, "hv1") == "skipped"

    # a new input: the host is set up again with it, and nothing else changes
    newer = run_plays(plays, inventory=lab["inventory"], extra_vars={"hypervisor_migration_port_max": 49214})
    try:
        assert newer.rc == 0, newer.output[-3000:]
        assert task_status(newer, HYPERVISOR_SETUP, "hv1") == "ok"
        assert "migration_port_max = 49214" in ssh(HOSTS["hv1"], "cat /etc/libvirt/qemu.conf").stdout
    finally:
        back = run_plays(plays, inventory=lab["inventory"])
        assert back.rc == 0, back.output[-3000:]


def running(pid):
    """Whether process ``pid`` exists and is no zombie."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, TypeError):
        return False


def recorded_storage():
    return lab_state(STATE_DIR)["storage"]


def domain_type(host):
    """What the hypervisor role found guests can use on ``host``: kvm or qemu (TCG)."""
    with open(host_file(STATE_DIR, host, "/etc/libvirt/virtplane-domain-type")) as handle:
        return handle.read().split()[0].rstrip(":")  # "kvm", or "qemu: <why not kvm>"


def guest_xml(name, address, kind, cmdline="", network=None, seed=None):
    return lab_guest_xml(name, address, kind, IMAGE, cmdline=cmdline, network=network, seed=seed)


def serial_path(host, name):
    return host_file(STATE_DIR, host, "/var/log/libvirt/qemu/%s.serial" % name)


def test_a_guest_boots_on_each_host_answers_ping_reads_its_seed_and_stops_gracefully(lab):
    """The lab image on each host: up, reachable, its NoCloud seed read; the ACPI power button stops it."""
    import libvirt

    hosts = {h["name"]: h for h in host_info(lab)["hosts"]}
    seeds = os.path.join(STATE_DIR, "shared", "seeds")  # every host sees the lab's shared directory
    os.makedirs(seeds, exist_ok=True)
    guests = []
    for index, (name, address) in enumerate(HOSTS.items(), start=1):
        netns = "vptest-" + name
        # a bridge inside the host for its guests; logical networks will manage these
        subprocess.run(["ip", "-n", netns, "link", "add", "vpguest", "type", "bridge"], check=False)
        subprocess.run(["ip", "-n", netns, "addr", "replace", "10.81.%d.1/24" % index, "dev", "vpguest"], check=True)
        subprocess.run(["ip", "-n", netns, "link", "set", "vpguest", "up"], check=True)
        conn = libvirt.open("qemu+tcp://%s/system" % address)
        guest_address = "10.81.%d.10" % index
        seed = os.path.join(seeds, "guest-%s.iso" % name)
        with open(seed, "wb") as handle:
            handle.write(nocloud_seed({"meta-data": "instance-id: iid-%s-%d\nlocal-hostname: seeded-%s\n"
                                       % (name, index, name), "user-data": "#cloud-config\n"}))
        os.chmod(seed, 0o644)
        domain = conn.createXML(guest_xml("guest-" + name, guest_address, hosts[name]["domain_type"], seed=seed), 0)
        serial = serial_path(name, "guest-" + name)
        guests.append((name, netns, conn, domain, guest_address, serial))
    try:
        for _name, netns, _conn, _domain, guest_address, serial in guests:
            deadline = time.time() + 90
            console = ""
            while time.time() < deadline and "VIRTPLANE-GUEST-READY" not in console:
                time.sleep(0.5)
                if os.path.exists(serial):
                    with open(serial, errors="replace") as handle:
                        console = handle.read()
            assert "VIRTPLANE-GUEST-READY ip=%s" % guest_address in console, console[-2000:]
            ping = subprocess.run(["ip", "netns", "exec", netns, "ping", "-c", "3", "-W", "2", guest_address],
                                  capture_output=True, text=True, check=False)
            assert ping.returncode == 0, ping.stdout + ping.stderr
            assert " 0% packet loss" in ping.stdout
            time.sleep(2)
            beats = heartbeats(read_console(serial))
            assert beats and beats == list(range(1, len(beats) + 1)), beats  # counting, never restarted
        for name, _netns, _conn, domain, _address, serial in guests:
            index = list(HOSTS).index(name) + 1
            console = wait_for_console(serial, "VIRTPLANE-GUEST-SEED", timeout=60)
            assert "VIRTPLANE-GUEST-SEED instance-id=iid-%s-%d local-hostname=seeded-%s\n" % (name, index, name) \
                in console, console[-2000:]
            # a graceful stop: the power button, and the guest powers itself off
            domain.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
        for name, _netns, conn, _domain, _address, serial in guests:
            deadline = time.time() + 60
            while time.time() < deadline and "guest-" + name in [d.name() for d in conn.listAllDomains()]:
                time.sleep(0.5)
            assert "guest-" + name not in [d.name() for d in conn.listAllDomains()]
            assert "VIRTPLANE-GUEST-POWEROFF" in read_console(serial)
    finally:
        for name, netns, conn, _domain, _address, _serial in guests:
            try:
                conn.lookupByName("guest-" + name).destroy()
            except libvirt.libvirtError:
                pass  # powered off
            conn.close()
            subprocess.run(["ip", "-n", netns, "link", "del", "vpguest"], check=False)
        shutil.rmtree(seeds, ignore_errors=True)


def test_a_guest_pings_its_peer_on_a_libvirt_network(lab):
    """vp.ping=: guest A reports on its console that it reaches guest B (both on hv1, booting together)."""
    import libvirt

    conn = libvirt.open("qemu+tcp://%s/system" % HOSTS["hv1"])
    # isolated: no <forward>, no address of the host on it; the two guests only
    network = conn.networkCreateXML("<network><name>vpping</name><bridge name='vpping0'/></network>")
    kind = domain_type("hv1")
    serials = {name: serial_path("hv1", name)
               for name in ("ping-a", "ping-b")}
    # a console left by an earlier run goes, from inside the host that wrote it
    ssh(HOSTS["hv1"], "rm -f /var/log/libvirt/qemu/ping-a.serial /var/log/libvirt/qemu/ping-b.serial")
    domains = []
    try:
        domains.append(conn.createXML(guest_xml("ping-b", "10.81.50.11", kind, network="vpping"), 0))
        domains.append(conn.createXML(guest_xml("ping-a", "10.81.50.10", kind, cmdline="vp.ping=10.81.50.11",
                                                network="vpping"), 0))
        deadline = time.time() + 90
        console = ""
        while time.time() < deadline and "VIRTPLANE-GUEST-PING 10.81.50.11 ok" not in console:
            time.sleep(0.5)
            console = read_console(serials["ping-a"])
        assert "VIRTPLANE-GUEST-READY ip=10.81.50.10" in console, console[-2000:]
        assert "VIRTPLANE-GUEST-PING 10.81.50.11 ok" in console, console[-2000:]
        assert "VIRTPLANE-GUEST-READY ip=10.81.50.11" in read_console(serials["ping-b"])
        # a guest without vp.ping pings nobody
        assert "VIRTPLANE-GUEST-PING" not in read_console(serials["ping-b"])
    finally:
        for domain in domains:
            domain.destroy()
        network.destroy()
        conn.close()
    assert "vpping0" not in subprocess.run(["ip", "-n", "vptest-hv1", "-br", "link"], capture_output=True,
                                           text=True, check=True).stdout


def iscsi_pool_xml(host):
    address, port = ISCSI_PORTAL.split(":")
    return ("<pool type='iscsi-direct'><name>lab-iscsi</name><source><host name='%s' port='%s'/>"
            "<device path='%s'/><initiator><iqn name='iqn.2026-11.dev.virtplane.lab:%s'/></initiator></source>"
            "</pool>" % (address, port, ISCSI_TARGET, host))


def test_the_iscsi_luns_are_seen_by_every_host_at_once(lab):
    import libvirt

    iscsi = lab_tool("up", "--check")["iscsi"]
    assert (iscsi["portal"], iscsi["target"]) == (ISCSI_PORTAL, ISCSI_TARGET)
    assert [(lun["lun"], lun["size_bytes"]) for lun in iscsi["luns"]] == [(1, GIB), (2, GIB)]
    pools = []
    try:
        for name, address in HOSTS.items():
            conn = libvirt.open("qemu+tcp://%s/system" % address)
            pools.append((conn, conn.storagePoolCreateXML(iscsi_pool_xml(name), 0)))
        keys = []
        for _conn, pool in pools:  # both pools active together, on the same LUNs
            assert pool.isActive()
            volumes = {volume.name(): volume for volume in pool.listAllVolumes()}
            # LUN 0 is tgt's controller (it cannot be removed): listed, 0 bytes
            assert sorted(volumes) == ["unit:0:0:0", "unit:0:0:1", "unit:0:0:2"], sorted(volumes)
            assert volumes["unit:0:0:0"].info()[1] == 0
            # libvirt 9.0's iscsi-direct takes the last LBA for the number of blocks: one 512-byte block short
            assert [volumes["unit:0:0:%d" % n].info()[1] for n in (1, 2)] == [GIB - 512, GIB - 512]
            assert pool.info()[1] == 2 * (GIB - 512)  # the pool's capacity
            keys.append(sorted(volume.key() for volume in volumes.values()))
        # the same LUNs on both hosts: volume keys name the portal, the target and the LUN
        assert keys[0] == keys[1]
        assert "ip-%s-iscsi-%s-lun-1" % (ISCSI_PORTAL, ISCSI_TARGET) in keys[0]
    finally:
        for conn, pool in pools:
            pool.destroy()
            conn.close()
    # sparse files: a LUN takes no space until written
    for lun in iscsi["luns"]:
        assert os.stat(lun["path"]).st_blocks * 512 < 64 * 1024 ** 2


def qemu_io(netns, command, lun):
    """A qemu-io command on LUN ``lun`` of the lab's target, from lab host namespace ``netns``."""
    url = "iscsi://%s/%s/%d" % (ISCSI_PORTAL, ISCSI_TARGET, lun)
    return subprocess.run(["ip", "netns", "exec", netns, "qemu-io", "-f", "raw", "-c", command, url],
                          capture_output=True, text=True, timeout=60, check=False)


def test_a_killed_tgtd_is_restarted_with_the_same_luns(lab):
    written = qemu_io("vptest-hv1", "write -P 0x5a 1M 64k", 2)
    assert written.returncode == 0 and "wrote 65536/65536" in written.stdout, written.stdout + written.stderr
    old = recorded_storage()["tgtd_pid"]
    assert running(old)
    # what a session's end does: the processes die, the namespace and the files stay
    for pid in subprocess.run(["ip", "netns", "pids", "vptest-storage"], capture_output=True, text=True,
                              check=True).stdout.split():
        subprocess.run(["kill", "-9", pid], check=False)
    deadline = time.time() + 5
    while running(old) and time.time() < deadline:
        time.sleep(0.1)
    expected = ["start tgtd at %s" % ISCSI_PORTAL, "create iSCSI target %s" % ISCSI_TARGET,
                "export LUN 1 (%s/iscsi/lun1.img)" % STATE_DIR, "export LUN 2 (%s/iscsi/lun2.img)" % STATE_DIR,
                "allow initiators from 10.80.0.0/24"]
    check = lab_tool("up", "--check")
    assert check["actions"] == expected
    assert not running(recorded_storage()["tgtd_pid"])  # a check changes nothing
    up = lab_tool("up")
    assert up["actions"] == expected
    new = up["iscsi"]["tgtd_pid"]
    assert new != old and running(new) and recorded_storage()["tgtd_pid"] == new
    assert lab_tool("up")["actions"] == []
    # the data written before is there, read from another host
    read = qemu_io("vptest-hv2", "read -P 0x5a 1M 64k", 2)
    assert read.returncode == 0 and "read 65536/65536" in read.stdout, read.stdout + read.stderr


def test_a_disk_is_never_opened_by_two_qemu_processes(lab):
    import libvirt

    disk = os.path.join(STATE_DIR, "shared", "images", "locktest.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, "16M"], check=True)
    os.chmod(disk, 0o666)
    hosts = {h["name"]: h for h in host_info(lab)["hosts"]}
    domains = []
    try:
        for name in ("hv1", "hv2"):
            root = ET.fromstring(guest_xml("lock-" + name, "10.81.9.%d" % len(domains), hosts[name]["domain_type"]))
            devices = root.find("devices")
            devices.remove(devices.find("interface"))
            disk_el = ET.SubElement(devices, "disk", type="file", device="disk")
            ET.SubElement(disk_el, "driver", name="qemu", type="qcow2")
            ET.SubElement(disk_el, "source", file=disk)
            ET.SubElement(disk_el, "target", dev="vda", bus="virtio")
            conn = libvirt.open("qemu+tcp://%s/system" % HOSTS[name])
            if name == "hv1":
                domains.append((conn, conn.createXML(ET.tostring(root, encoding="unicode"), 0)))
                continue
            with pytest.raises(libvirt.libvirtError) as refused:
                conn.createXML(ET.tostring(root, encoding="unicode"), 0)
            conn.close()
            # refused by a lock on the image (QEMU's own, beneath virtlockd's lease), never opened twice
            assert 'Failed to get "write" lock' in str(refused.value) or "resource busy" in str(refused.value), \
                str(refused.value)
        # virtlockd took a lease for the disk in the shared lockspace
        assert os.listdir(os.path.join(STATE_DIR, "shared", "lockspace"))
    finally:
        for conn, domain in domains:
            domain.destroy()
            conn.close()
        os.unlink(disk)


@pytest.mark.parametrize("host, stop, start", [
    ("hv1", "systemctl stop libvirtd", "systemctl start libvirtd"),
    ("hv2", "/usr/local/sbin/virtplane-service stop libvirtd", "/usr/local/sbin/virtplane-service start libvirtd"),
])
def test_stopped_libvirtd_makes_the_host_nonresponsive_with_the_reason(lab, host, stop, start):
    ssh(HOSTS[host], stop)
    try:
        # the refresh finds it so, whether the engine's monitor saw it first or not
        info = host_info(lab, refresh=True, timeout=5)
        status = {h["name"]: (h["status"], h["status_reason"]) for h in info["hosts"]}
        other = "hv2" if host == "hv1" else "hv1"
        assert status[other] == ("Up", "")
        assert status[host][0] == "NonResponsive"
        assert status[host][1].startswith("cannot connect to libvirt at qemu+tcp://%s/system: " % HOSTS[host])
        assert "Connection refused" in status[host][1]
    finally:
        ssh(HOSTS[host], start, check=False)
    info = host_info(lab, refresh=True)
    assert [h["status"] for h in info["hosts"]] == ["Up", "Up"]


def test_tls_transport_with_the_engine_ca(lab):
    """On hv1, the production set-up: systemd and TLS with a certificate signed by the engine's CA."""
    pki = os.path.join(STATE_DIR, "pki")  # on the engine host, removed with the test lab
    run = run_plays([
        {"hosts": "engine", "gather_facts": False, "tasks": [
            {"name": "CA", "ansible.builtin.include_role": {"name": "virtplane.kvm.engine", "tasks_from": "pki.yml"},
             "vars": {"engine_pki_dir": pki, "engine_pki_organization": "virtplane", "engine_pki_ca_days": 30,
                      "engine_pki_cert_days": 30}}]},
        dict(hypervisor_play(), hosts="hv1",
             vars={"hypervisor_libvirt_transport": "tls", "hypervisor_engine_pki_dir": pki})],
        inventory=lab["inventory"])
    assert run.rc == 0, run.output[-4000:]
    listening = subprocess.run(["ip", "netns", "exec", "vptest-hv1", "ss", "-ltnH"], capture_output=True,
                               text=True, check=True).stdout
    assert "10.79.0.11:16514" in listening and "16509" not in listening  # TLS only, no plain TCP
    hv1 = [h for h in host_info(lab, refresh=True)["hosts"] if h["name"] == "hv1"][0]
    assert hv1["libvirt_uri"] == "qemu+tls://10.79.0.11/system?pkipath=%s/client" % pki
    assert hv1["status"] == "Up", hv1["status_reason"]
    assert os.stat(host_file(STATE_DIR, "hv1", "/etc/libvirt/pki/serverkey.pem")).st_mode & 0o077 == 0
    # a client that trusts the CA but has no certificate of its own is refused by the host
    import libvirt
    anonymous = os.path.join(STATE_DIR, "anonymous-client")
    os.makedirs(anonymous, exist_ok=True)
    shutil.copy(host_file(STATE_DIR, "engine1", os.path.join(pki, "cacert.pem")), anonymous)
    with pytest.raises(libvirt.libvirtError) as refused:
        libvirt.open("qemu+tls://10.79.0.11/system?pkipath=%s" % anonymous)
    # the host closes the connection after the handshake when the client shows no certificate
    assert "Unable to read TLS confirmation" in str(refused.value), str(refused.value)


def power_cut(host):
    """What a session's end (or a power cut) does to a lab host: its processes die, its files stay."""
    recorded = [h for h in lab_state(STATE_DIR)["hosts"] if h["name"] == host][0]
    for pid in subprocess.run(["ip", "netns", "pids", recorded["netns"]], capture_output=True, text=True,
                              check=True).stdout.split():
        subprocess.run(["kill", "-9", pid], check=False)
    deadline = time.time() + 10
    while running(recorded["pid"]) and time.time() < deadline:
        time.sleep(0.1)


def test_hosts_that_died_boot_again_from_their_own_root(lab):
    for host in HOSTS:
        power_cut(host)
    run = run_plays([lab_play()], inventory=lab["inventory"])
    assert run.rc == 0, run.output[-3000:]
    result = run["virtplane.kvm.lab : Build or repair the lab"]
    assert result["changed"]
    assert json.loads(result["stdout"])["actions"] == ["boot lab host hv1 (it was down)",
                                                       "boot lab host hv2 (it was down)"]
    for name, address in HOSTS.items():
        assert ssh(address, "hostname").stdout.strip() == name
    # what was installed and configured in them is still there: systemd starts hv1's libvirtd at boot,
    # as on any machine; on hv2, without an init system, nothing starts it until the role does
    hosts = {h["name"]: h for h in host_info(lab, refresh=True, timeout=5)["hosts"]}
    assert hosts["hv1"]["status"] == "Up", hosts["hv1"]["status_reason"]
    assert hosts["hv2"]["status"] == "NonResponsive"
    again = run_plays([dict(hypervisor_play(), hosts="hv2")], inventory=lab["inventory"])
    assert again.rc == 0, again.output[-3000:]
    assert [h["status"] for h in host_info(lab, refresh=True)["hosts"]] == ["Up", "Up"]


def test_a_host_whose_init_was_never_recorded_is_stopped_before_it_boots_again(lab):
    """What a run killed between starting a host's init and recording it leaves: a host that runs,
    recorded as down. The next run must not boot a second init on the same root."""
    path = os.path.join(STATE_DIR, "lab.json")
    state = lab_state(STATE_DIR)
    for host in state["hosts"]:
        if host["name"] == "hv1":
            host.update(pid=0, started=None)
    with open(path, "w") as handle:
        json.dump(state, handle)
    assert len(inits("hv1")) == 1
    assert lab_tool("up")["actions"] == ["boot lab host hv1 (it was down)"]
    assert len(inits("hv1")) == 1  # the new one: the old one was stopped first
    assert inits("hv1") == [[h for h in lab_state(STATE_DIR)["hosts"] if h["name"] == "hv1"][0]["pid"]]
    assert ssh(HOSTS["hv1"], "systemctl is-active libvirtd").stdout.strip() == "active"
    assert [h["status"] for h in host_info(lab, refresh=True)["hosts"]] == ["Up", "Up"]


def test_a_detached_nic_and_a_lost_gateway_address_are_repaired(lab):
    subprocess.run(["ip", "link", "set", "vptest-hv2", "nomaster"], check=True)
    subprocess.run(["ip", "addr", "del", "10.80.0.1/24", "dev", "vptest0s"], check=True)
    repairs = ["give bridge vptest0s its address 10.80.0.1/24", "attach lab host hv2's vptest-hv2 to bridge vptest0"]
    assert lab_tool("up", "--check")["actions"] == repairs
    assert lab_tool("up")["actions"] == repairs
    masters = {link["ifname"]: link.get("master") for link in json.loads(subprocess.run(
        ["ip", "-j", "link"], capture_output=True, text=True, check=True).stdout)}
    assert masters["vptest-hv2"] == "vptest0"
    assert ssh(HOSTS["hv2"], "hostname").stdout.strip() == "hv2"
    assert lab_tool("up")["actions"] == []


def inits(host):
    """The processes in the host's network namespace that are PID 1 of a PID namespace: its init."""
    found = []
    for pid in subprocess.run(["ip", "netns", "pids", "vptest-" + host], capture_output=True, text=True,
                              check=True).stdout.split():
        try:
            with open("/proc/%s/status" % pid) as handle:
                nspid = [line.split()[1:] for line in handle if line.startswith("NSpid:")][0]
        except (OSError, IndexError):
            continue
        if len(nspid) > 1 and nspid[-1] == "1":
            found.append(int(pid))
    return found


def test_a_host_that_does_not_finish_booting_is_stopped_with_its_journal(lab):
    unit = "/etc/systemd/system/vptest-hang.service"
    ssh(HOSTS["hv1"], "printf '[Unit]\\nDescription=a unit that never finishes starting\\n[Service]\\n"
                      "Type=oneshot\\nExecStart=/bin/sleep infinity\\nTimeoutStartSec=infinity\\n"
                      "[Install]\\nWantedBy=multi-user.target\\n' > %s && systemctl enable -q vptest-hang" % unit)
    power_cut("hv1")
    run = run_plays([lab_play(lab_boot_timeout=10)], inventory=lab["inventory"])
    assert run.rc != 0
    failure = run["virtplane.kvm.lab : Explain a failure"]["msg"]
    assert failure.startswith("Lab up failed: lab host hv1 was stopped: it did not finish booting within 10 s "
                              "(boot_timeout); waiting: "), failure
    # what it waits for, that unit's own journal, then the journal's last lines
    about = failure.split("; the journal of vptest-hang.service: ")[1].split("; the last lines of its journal: ")
    assert "Starting vptest-hang.service - a unit that never finishes starting" in about[0], failure
    assert len(about) == 2 and re.match(r"\w{3} \d\d \d\d:\d\d:\d\d hv1 ", about[1]), failure
    assert not running([h for h in lab_state(STATE_DIR)["hosts"] if h["name"] == "hv1"][0]["pid"])
    # the host is stopped, its root kept: the unit goes from it, and the host boots
    upper = host_file(STATE_DIR, "hv1", unit)
    os.unlink(upper)
    os.unlink(host_file(STATE_DIR, "hv1", "/etc/systemd/system/multi-user.target.wants/vptest-hang.service"))
    run = run_plays([lab_play()], inventory=lab["inventory"])
    assert run.rc == 0, run.output[-3000:]
    assert [h["status"] for h in host_info(lab, refresh=True)["hosts"]] == ["Up", "Up"]


def test_down_leaves_nothing_and_again_changes_nothing(lab):
    tgtd = recorded_storage()["tgtd_pid"]
    assert running(tgtd)
    luns = [os.path.join(STATE_DIR, "iscsi", "lun%d.img" % n) for n in (1, 2)]
    assert all(os.path.exists(path) for path in luns)
    run = run_plays([lab_play(lab_state="absent")], inventory=lab["inventory"])
    assert run.rc == 0, run.output[-3000:]
    down = json.loads(run["virtplane.kvm.lab : Build or repair the lab"]["stdout"])
    # every host powered off by its own init within the stop timeout, none had to be killed
    assert down["stopped"] == {"engine1": "powered off", "hv1": "powered off", "hv2": "powered off"}
    assert leftovers() == []
    assert not running(tgtd)
    assert not any(os.path.exists(path) for path in luns)
    again = run_plays([lab_play(lab_state="absent")], inventory=lab["inventory"])
    assert again.rc == 0 and again.changed_tasks == []
