"""The monitor (reconcile module, monitor service) and fencing on a real PostgreSQL, with libvirt's test driver as
the hosts and the lab's power controller (run on loopback, its 'hosts' processes of the test's own) as their BMC:
host status Up -> Connecting -> NonResponsive -> Up, VMs that died or were started behind the engine's back,
a dead host fenced and its HA VMs restarted elsewhere by priority (never one that is not proven dead), fencing by
hand, the fence agent's bad input and wrong credentials (never printed), and two monitor services of which one
is active and the other takes over when it dies. Guests that really die and restart are in tests/lab."""

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.support.engine import engine_write, start_monitor, until
from tests.support.playbook import ROOT, run_play

LAB_TOOL = os.path.join(ROOT, "roles", "lab", "files", "virtplane_lab.py")
PASSWORD = "s3cret-Pa55+word"
BASE = [{"name": "dc", "virtplane.kvm.datacenter": {"name": "paris"}},
        {"name": "prod", "virtplane.kvm.cluster": {"name": "prod", "datacenter": "paris"}}]
KERNEL = {"kernel": "/var/lib/virtplane/images/vmlinuz", "cmdline": "console=ttyS0"}
DOMAIN = """<domain type='test'><name>%s</name><uuid>%s</uuid><memory unit='MiB'>256</memory><vcpu>1</vcpu>
<os><type>hvm</type></os></domain>"""


def vm(name, ha=None, **options):
    values = dict(name=name, cluster="prod", memory="256MiB", vcpus=1, nics=[], boot=KERNEL)
    if ha is not None:
        values["ha"] = {"enabled": True, "priority": ha}
    values.update(options)
    return {"name": "vm " + name, "virtplane.kvm.vm": values}


def node(path, domains=()):
    path.write_text("<node><cpu><mhz>2400</mhz></cpu>%s</node>" % "".join(DOMAIN % d for d in domains))


def reconcile(engine_options, name="reconcile", **options):
    return run_play([{"name": name, "ignore_errors": True, "virtplane.kvm.reconcile": options}],
                    engine=engine_options)[name]


def runtime(sql):
    return {r["name"]: r for r in sql("SELECT v.name, r.status, r.status_reason, h.name AS host FROM vm v"
                                      " JOIN vm_runtime r ON r.vm_id = v.id LEFT JOIN host h ON h.id = r.run_host_id")}


def host_status(sql):
    return {r["name"]: r["status"] for r in sql("SELECT name, status FROM host")}


@pytest.fixture
def cluster(engine_options, sql, tmp_path):
    """hv1 runs web (HA, priority 10), api (HA, priority 5) and batch; hv2 runs nothing; db is Down."""
    paths = {name: tmp_path / ("%s.xml" % name) for name in ("hv1", "hv2")}
    for path in paths.values():
        node(path)
    hosts = [{"name": "host " + name,
              "virtplane.kvm.host": {"name": name, "cluster": "prod", "libvirt_uri": "test://%s" % path}}
             for name, path in paths.items()]
    run = run_play(BASE + hosts + [vm("web", 10), vm("api", 5), vm("batch"), vm("db")], engine=engine_options)
    assert run.rc == 0, run.output[-3000:]
    ids = {r["name"]: str(r["id"]) for r in sql("SELECT name, id FROM vm")}
    node(paths["hv1"], [(name, ids[name]) for name in ("web", "api", "batch")])
    engine_write(engine_options, [
        "UPDATE vm_runtime SET status = 'Up', reserved_memory_mib = 256, reserved_vcpus = 1, run_host_id ="
        " (SELECT id FROM host WHERE name = 'hv1') WHERE vm_id = '%s'" % ids[n] for n in ("web", "api", "batch")])
    return {"paths": paths, "ids": ids, "tmp": tmp_path}


def lab_tool():
    spec = importlib.util.spec_from_file_location("virtplane_lab", LAB_TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def power(tmp_path):
    """The lab's power controller on loopback, over HTTP and HTTPS; its 'lab hosts' are sleeping processes of
    this test."""
    state = tmp_path / "power"
    state.mkdir()
    (state / "power.secret").write_text(PASSWORD + "\n")
    lab_tool().make_power_cert(str(state / "power.pem"), "127.0.0.1")
    sleepers = {name: subprocess.Popen(["sleep", "600"]) for name in ("hv1", "hv2")}

    def started(pid):
        with open("/proc/%d/stat" % pid) as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[19])
    (state / "lab.json").write_text(json.dumps({"hosts": [
        {"name": name, "role": "hypervisor", "pid": proc.pid, "started": started(proc.pid)}
        for name, proc in sleepers.items()]}))
    server = subprocess.Popen([sys.executable, LAB_TOOL, "power", "--state-dir", str(state), "--listen",
                               "127.0.0.1", "--port", "0", "--tls-port", "0"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT)
    ready = state / "power.ready"
    deadline = time.time() + 10
    while not ready.exists() or not ready.read_text().strip():
        assert time.time() < deadline and server.poll() is None, "the power controller did not start"
        time.sleep(0.05)
    port, tls_port = (int(p) for p in ready.read_text().split())
    yield {"port": port, "tls_port": tls_port, "sleepers": sleepers}
    server.kill()
    server.wait()
    for proc in sleepers.values():
        proc.kill()
        proc.wait()


CHASSIS = """#!/bin/sh
# ipmi_sim's chassis control: <device> get power | <device> set power 0|1; the host is the process in %s
pid=$(cat %s)
case "$2 $3" in
  "get power") state=$(sed 's/.*) //' /proc/"$pid"/stat 2>/dev/null | cut -c1)  # a zombie is off
               if [ -n "$state" ] && [ "$state" != Z ]; then echo power:1; else echo power:0; fi ;;
  "set power") if [ "$4" = 0 ]; then kill -9 "$pid" 2>/dev/null; fi; exit 0 ;;
  *) echo "unsupported: $*"; exit 1 ;;
esac
"""
LAN_CONF = """name "hv1"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 %d
    priv_limit admin
    allowed_auths_admin md5
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "%s 0x20"
  user 2 true "admin" "%s" admin 10 md5
"""


@pytest.fixture
def bmc(tmp_path, power):
    """An IPMI BMC on loopback (OpenIPMI's ipmi_sim) whose chassis is power's hv1: a power-off kills it."""
    state = tmp_path / "bmc"
    (state / "persist").mkdir(parents=True)
    (state / "host.pid").write_text(str(power["sleepers"]["hv1"].pid))
    chassis = state / "chassis"
    chassis.write_text(CHASSIS % (state / "host.pid", state / "host.pid"))
    chassis.chmod(0o755)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (state / "lan.conf").write_text(LAN_CONF % (port, chassis, PASSWORD))
    (state / "bmc.emu").write_text("mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02\n"
                                   "mc_enable 0x20\n")
    server = subprocess.Popen(["ipmi_sim", "-n", "-c", str(state / "lan.conf"), "-f", str(state / "bmc.emu"), "-s",
                               str(state / "persist")], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL)
    try:
        status = ["ipmitool", "-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", str(port), "-U", "admin", "-E",
                  "chassis", "power", "status"]
        environment = dict(os.environ, IPMI_PASSWORD=PASSWORD)
        until(lambda: server.poll() is not None or subprocess.run(status, env=environment, capture_output=True,
                                                                  check=False).returncode == 0,
              timeout=15, what="ipmi_sim answering")
        assert server.poll() is None, "ipmi_sim stopped (its port taken meanwhile?)"
        yield {"port": port}
    finally:
        server.kill()
        server.wait()


def fence_of(port, password=PASSWORD):
    return {"agent": "lab", "address": "127.0.0.1", "port": port, "password": password}


def test_a_host_that_stops_answering_is_connecting_then_nonresponsive_and_up_again(engine_options, cluster, sql):
    first = reconcile(engine_options)
    assert not first.get("failed"), (first.get("msg"), first.get("module_stderr"), first.get("exception"))
    assert first["reconcile"]["hosts"] == {"hv1": "Up", "hv2": "Up"}
    assert not first["changed"], first["actions"]
    cluster["paths"]["hv2"].unlink()  # its libvirt no longer answers
    silent = reconcile(engine_options, grace=30)
    assert silent["changed"] and silent["reconcile"]["hosts"]["hv2"] == "Connecting", silent
    assert sql("SELECT status_reason FROM host WHERE name = 'hv2'")[0]["status_reason"].startswith("cannot connect")
    # still within its grace: Connecting; two passes a second apart with a grace of 1 s: NonResponsive
    assert reconcile(engine_options, grace=30)["reconcile"]["hosts"]["hv2"] == "Connecting"
    gone = reconcile(engine_options, grace=1, rounds=2)
    assert gone["reconcile"]["hosts"]["hv2"] == "NonResponsive", gone
    node(cluster["paths"]["hv2"])
    back = reconcile(engine_options)
    assert back["reconcile"]["hosts"]["hv2"] == "Up" and "host hv2: NonResponsive -> Up" in back["actions"], back
    events = [r["message"] for r in sql("SELECT message FROM event WHERE code = 'HOST_STATUS_CHANGED' AND"
                                        " host_name = 'hv2' ORDER BY occurred_at, id")]
    expected = ["Host hv2 is Connecting", "Host hv2 is NonResponsive", "Host hv2 is Up"]
    assert [e.split(":")[0] for e in events[-3:]] == expected, events
    # hv1's VMs were never touched: it answered all along
    expected = {"web": "Up", "api": "Up", "batch": "Up", "db": "Down"}
    assert {n: r["status"] for n, r in runtime(sql).items()} == expected


def test_vms_that_died_or_were_started_behind_the_engines_back_are_recorded(engine_options, cluster, sql):
    ids = cluster["ids"]
    # batch died; db was started on hv1 by hand; 'stranger' is nobody's
    node(cluster["paths"]["hv1"], [("web", ids["web"]), ("api", ids["api"]), ("db", ids["db"]),
                                   ("stranger", "8a5f2c1e-3b4d-4c6e-9f70-0123456789ab")])
    result = reconcile(engine_options)
    assert not result.get("failed"), result
    vms = runtime(sql)
    assert (vms["batch"]["status"], vms["batch"]["host"]) == ("Down", None)
    assert "it stopped on host hv1 outside the engine" in vms["batch"]["status_reason"]
    assert (vms["db"]["status"], vms["db"]["host"]) == ("Up", "hv1")
    assert sql("SELECT reserved_memory_mib FROM vm_runtime WHERE vm_id = %s", ids["db"])[0]["reserved_memory_mib"] \
        == 256  # it counts on its host
    assert "VM batch: died on hv1 -> Down" in result["actions"]
    assert "VM db: Down -> Up on hv1 (found)" in result["actions"]
    reconcile(engine_options)
    unmanaged = sql("SELECT message FROM event WHERE code = 'DOMAIN_UNMANAGED'")
    assert [e["message"] for e in unmanaged] == ["Host hv1 runs domain stranger, which the engine does not manage"]


def test_a_dead_host_is_fenced_and_its_ha_vms_restart_elsewhere_by_priority(engine_options, cluster, sql, power):
    # a wrong password is refused before anything is written, and never printed
    wrong = run_play([{"name": "wrong", "ignore_errors": True, "virtplane.kvm.host": {
        "name": "hv1", "fence": fence_of(power["port"], "not-the-password")}}], engine=engine_options)
    assert "refused the credentials (HTTP 401)" in wrong["wrong"]["msg"], wrong["wrong"]
    assert "not-the-password" not in wrong.output
    assert sql("SELECT fence_agent FROM host WHERE name = 'hv1'")[0]["fence_agent"] is None
    configured = run_play([{"name": "fence", "virtplane.kvm.host": {"name": "hv1", "fence": fence_of(power["port"])}},
                           {"name": "again", "virtplane.kvm.host": {"name": "hv1", "fence": fence_of(power["port"])}}],
                          engine=engine_options)
    assert configured["fence"]["changed"] and not configured["again"]["changed"], configured.output[-2000:]
    assert configured["fence"]["host"]["fence"] == {"agent": "lab", "address": "127.0.0.1", "port": power["port"],
                                                    "username": None, "options": {}}
    assert PASSWORD not in configured.output
    # hv1 dies: its libvirt is gone, its power controller still says On until it is fenced
    cluster["paths"]["hv1"].unlink()
    result = reconcile(engine_options, grace=1, rounds=2)
    assert not result.get("failed"), result
    assert power["sleepers"]["hv1"].wait(5) == -signal.SIGKILL  # powered off: every process of the host killed
    assert power["sleepers"]["hv2"].poll() is None
    vms = runtime(sql)
    assert {n: (vms[n]["status"], vms[n]["host"]) for n in ("web", "api")} == {"web": ("Up", "hv2"),
                                                                               "api": ("Up", "hv2")}, vms
    assert (vms["batch"]["status"], vms["batch"]["host"]) == ("Down", None)
    assert vms["batch"]["status_reason"] == "host hv1 was fenced (powered off by its lab agent)"
    restarted = [r["vm_name"] for r in sql("SELECT vm_name FROM event WHERE code = 'VM_HA_RESTARTED'"
                                           " ORDER BY occurred_at, id")]
    assert restarted == ["web", "api"]  # the higher priority first
    fenced = sql("SELECT message FROM event WHERE code = 'HOST_FENCED'")
    assert len(fenced) == 1 and "HA restart of web, api; Down: batch" in fenced[0]["message"], fenced
    assert sql("SELECT fenced_at IS NOT NULL AS f, status FROM host WHERE name = 'hv1'")[0] == \
        {"f": True, "status": "NonResponsive"}
    # nothing is done twice: with hv2 running them (a test-driver host keeps only what its node file has), another
    # pass fences nothing and starts nothing
    ids = cluster["ids"]
    node(cluster["paths"]["hv2"], [("web", ids["web"]), ("api", ids["api"])])
    again = reconcile(engine_options)
    assert not any("fenced" in a or "restarted" in a for a in again["actions"]), again["actions"]
    assert PASSWORD not in json.dumps(sql("SELECT * FROM event"), default=str)


def test_a_host_its_power_controller_reports_off_needs_no_grace(engine_options, cluster, sql, power):
    run = run_play([{"name": "fence", "virtplane.kvm.host": {"name": "hv1", "fence": fence_of(power["port"])}}],
                   engine=engine_options)
    assert run["fence"]["changed"], run.output[-2000:]
    # hv1 loses its power: its libvirt is gone and its power controller says Off
    power["sleepers"]["hv1"].kill()
    power["sleepers"]["hv1"].wait()
    cluster["paths"]["hv1"].unlink()
    result = reconcile(engine_options, grace=300)  # one pass, however long the grace
    assert result["reconcile"]["hosts"]["hv1"] == "NonResponsive", result
    assert result["actions"][:3] == ["host hv1: Up -> Connecting (%s)" % result["actions"][0].split("(", 1)[1][:-1],
                                     "host hv1: Connecting -> NonResponsive", "host hv1: fenced by its lab agent"]
    vms = runtime(sql)
    assert {n: (vms[n]["status"], vms[n]["host"]) for n in ("web", "api", "batch")} == {
        "web": ("Up", "hv2"), "api": ("Up", "hv2"), "batch": ("Down", None)}, vms
    reason = sql("SELECT message FROM event WHERE code = 'HOST_STATUS_CHANGED' AND message LIKE"
                 " 'Host hv1 is NonResponsive%%'")[0]["message"]
    assert "its power controller reports it off" in reason


def test_a_host_that_cannot_be_fenced_is_not_presumed_dead_until_fenced_by_hand(engine_options, cluster, sql, power):
    cluster["paths"]["hv1"].unlink()
    result = reconcile(engine_options, grace=1, rounds=2)
    assert result["reconcile"]["hosts"]["hv1"] == "NonResponsive", result
    vms = runtime(sql)
    assert {n: (vms[n]["status"], vms[n]["host"]) for n in ("web", "api", "batch")} == {
        n: ("Unknown", "hv1") for n in ("web", "api", "batch")}, vms
    [unproven] = sql("SELECT message FROM event WHERE code = 'HOST_NOT_PROVEN_DEAD'")
    assert "cannot be proven dead (it has no fence agent; no storage leases)" in unproven["message"]
    # fencing by hand needs an agent that powers the host off
    refused = run_play([{"name": "fence", "ignore_errors": True,
                         "virtplane.kvm.host": {"name": "hv1", "state": "fenced"}}], engine=engine_options)
    assert refused["fence"]["msg"] == "Cannot fence host hv1: it has no fence agent (set fence.agent)"
    run = run_play([{"name": "agent", "virtplane.kvm.host": {"name": "hv1", "fence": fence_of(power["port"])}}],
                   engine=engine_options)
    assert run["agent"]["changed"]
    checked = run_play([{"name": "fence", "virtplane.kvm.host": {"name": "hv1", "state": "fenced"}}],
                       engine=engine_options, check=True)
    assert checked["fence"]["changed"] and power["sleepers"]["hv1"].poll() is None
    assert checked["fence"]["actions"] == ["power off host hv1 through its lab agent"]
    fenced = run_play([{"name": "fence", "virtplane.kvm.host": {"name": "hv1", "state": "fenced"}},
                       {"name": "again", "virtplane.kvm.host": {"name": "hv1", "state": "fenced"}}],
                      engine=engine_options)
    assert fenced["fence"]["changed"] and not fenced["again"]["changed"], fenced.output[-2000:]
    assert power["sleepers"]["hv1"].wait(5) == -signal.SIGKILL
    vms = runtime(sql)
    assert {n: (vms[n]["status"], vms[n]["host"]) for n in ("web", "api", "batch")} == {
        "web": ("Up", "hv2"), "api": ("Up", "hv2"), "batch": ("Down", None)}, vms


def program_fence(kind, power, bmc, password=PASSWORD, **options):
    if kind == "redfish":
        options.setdefault("ssl_insecure", True)
        return {"agent": "redfish", "address": "127.0.0.1", "port": power["tls_port"], "username": "root",
                "password": password, "options": dict(options, systems_uri="/redfish/v1/Systems/hv1")}
    return {"agent": "ipmilan", "address": "127.0.0.1", "port": bmc["port"], "username": "admin",
            "password": password, "options": dict(options, cipher=3)}


@pytest.mark.parametrize("kind", ["redfish", "ipmilan"])
def test_the_fence_agents_programs_check_credentials_and_power_a_host_off(
        kind, engine_options, cluster, sql, power, request):
    """fence_redfish against the lab's power controller over HTTPS, fence_ipmilan against ipmi_sim: the programs
    of the fence-agents package, run as the engine runs them."""
    bmc = request.getfixturevalue("bmc") if kind == "ipmilan" else None
    tasks = [{"name": "wrong", "ignore_errors": True, "virtplane.kvm.host": {
        "name": "hv1", "fence": program_fence(kind, power, bmc, "not-the-password")}}]
    if kind == "redfish":  # the service's certificate is verified unless told otherwise
        tasks.append({"name": "unverified", "ignore_errors": True, "virtplane.kvm.host": {
            "name": "hv1", "fence": program_fence(kind, power, bmc, ssl_insecure=False)}})
    refused = run_play(tasks, engine=engine_options)
    prefix = "Cannot set the fencing of host hv1: Fence agent of host hv1 (%s agent at 127.0.0.1:%d): status failed: " \
        % (kind, power["tls_port"] if kind == "redfish" else bmc["port"])
    assert refused["wrong"]["msg"].startswith(prefix), refused["wrong"]["msg"]
    assert "not-the-password" not in refused.output
    if kind == "redfish":
        assert refused["unverified"]["msg"].startswith(prefix) and "CERTIFICATE_VERIFY_FAILED" in \
            refused["unverified"]["msg"], refused["unverified"]["msg"]
    assert sql("SELECT fence_agent FROM host WHERE name = 'hv1'")[0]["fence_agent"] is None
    cluster["paths"]["hv1"].unlink()  # hv1's libvirt is gone as its power will be
    run = run_play([{"name": "agent", "virtplane.kvm.host": {"name": "hv1", "fence": program_fence(kind, power, bmc)}},
                    {"name": "fence", "virtplane.kvm.host": {"name": "hv1", "state": "fenced"}}],
                   engine=engine_options)
    assert run["agent"]["changed"] and run["fence"]["changed"], run.output[-2000:]
    assert PASSWORD not in run.output
    assert power["sleepers"]["hv1"].wait(10) == -signal.SIGKILL
    assert power["sleepers"]["hv2"].poll() is None
    [fenced] = sql("SELECT message FROM event WHERE code = 'HOST_FENCED'")
    assert "powered off by its %s agent" % kind in fenced["message"], fenced
    vms = runtime(sql)
    assert {n: (vms[n]["status"], vms[n]["host"]) for n in ("web", "api", "batch")} == {
        "web": ("Up", "hv2"), "api": ("Up", "hv2"), "batch": ("Down", None)}, vms


BAD_FENCE = [
    ("no program", {"agent": "ipmilan", "address": "10.0.0.5", "password": "x"},
     "Invalid value for 'fence.agent': ipmilan cannot fence from here: the program fence_ipmilan is not installed on "
     "the engine host"),
    ("no ipmitool", {"agent": "ipmilan", "address": "10.0.0.5", "password": "x"},
     "Invalid value for 'fence.agent': ipmilan cannot fence from here: the program ipmitool, which fence_ipmilan "
     "runs, is not installed on the engine host (package ipmitool)"),
    ("cipher", {"agent": "ipmilan", "address": "10.0.0.5", "options": {"cipher": 99}},
     "Invalid value for 'fence.options.cipher': '99' is no IPMI 2.0 cipher suite (0 to 17)"),
    ("cipher without lanplus", {"agent": "ipmilan", "address": "10.0.0.5", "options": {"cipher": 3, "lanplus": False}},
     "Invalid value for 'fence.options.cipher': a cipher suite is IPMI 2.0's (lanplus)"),
    ("redfish without its system", {"agent": "redfish", "address": "10.0.0.5", "options": {"ssl_insecure": True}},
     "Invalid value for 'fence.options.systems_uri': the redfish agent needs the path of the host's system"),
    ("no address", {"agent": "lab", "password": "x"},
     "Invalid value for 'fence.address': the lab agent needs the address of the host's power controller"),
    ("address metachar", {"agent": "lab", "address": "10.0.0.5;reboot"}, "Invalid value for 'fence.address': "),
    ("address newline", {"agent": "lab", "address": "10.0.0.5\n"}, "Invalid value for 'fence.address': "),
    ("port zero", {"agent": "lab", "address": "10.0.0.5", "port": 0}, "Invalid value for 'fence.port': 0 is outside"),
    ("port huge", {"agent": "lab", "address": "10.0.0.5", "port": 10 ** 12}, "Invalid value for 'fence.port': "),
    ("password newline", {"agent": "lab", "address": "10.0.0.5", "password": "abc\ndef"},
     "Invalid value for 'fence.password': must be text of 1 to 1024 characters without control characters or line "
     "breaks"),
    ("password line separator", {"agent": "lab", "address": "10.0.0.5", "password": "abc\u2028def"},
     "Invalid value for 'fence.password': must be text of 1 to 1024 characters"),
    ("ssh password", {"agent": "ssh", "address": "10.0.0.5", "password": "x"},
     "Invalid value for 'fence.password': the ssh agent logs in with a key"),
    ("unknown option", {"agent": "lab", "address": "10.0.0.5", "options": {"command": "rm -rf /"}},
     "Invalid value for 'fence.options.command': the lab agent takes system"),
    ("identity file", {"agent": "ssh", "address": "10.0.0.5", "options": {"identity_file": "/nonexistent/key"}},
     "Invalid value for 'fence.options.identity_file': '/nonexistent/key' is no readable file on the engine host"),
    ("user metachar", {"agent": "lab", "address": "10.0.0.5", "username": "root$(id)"},
     "Invalid value for 'fence.username': "),
    ("none with address", {"agent": "none", "address": "10.0.0.5"},
     "Invalid value for 'fence.address': a host without a fence agent takes no address"),
    ("agent", {"agent": "telnet", "address": "10.0.0.5"}, "Invalid value for 'fence.agent': "),
    ("nobody answers", {"agent": "lab", "address": "127.0.0.1", "port": 9, "password": "x"},
     "Cannot set the fencing of host hv1: Fence agent of host hv1 (lab agent at 127.0.0.1:9): no power controller "
     "answers: "),
]


@pytest.mark.parametrize("check", [True, False], ids=["check", "real"])
def test_bad_fence_input_is_refused_naming_the_field_before_anything_changes(engine_options, cluster, sql, check,
                                                                             tmp_path):
    before = sql("SELECT h.*, (SELECT count(*) FROM host_fence_secret) AS secrets FROM host h ORDER BY name")
    events = sql("SELECT count(*) AS n FROM event")[0]["n"]
    tasks = [{"name": name, "ignore_errors": True, "virtplane.kvm.host": {"name": "hv1", "fence": fence}}
             for name, fence, _message in BAD_FENCE]
    # an engine host without the fence-agents programs, or with fence_ipmilan but no ipmitool
    bare, without_ipmitool = tmp_path / "bare", tmp_path / "no-ipmitool"
    bare.mkdir()
    without_ipmitool.mkdir()
    (without_ipmitool / "fence_ipmilan").symlink_to(shutil.which("fence_ipmilan"))
    tasks[0]["environment"] = {"PATH": str(bare)}
    tasks[1]["environment"] = {"PATH": str(without_ipmitool)}
    tasks.append({"name": "fenced with settings", "ignore_errors": True,
                  "virtplane.kvm.host": {"name": "hv1", "state": "fenced", "storage_leases": True}})
    run = run_play(tasks, engine=engine_options, check=check)
    for name, _fence, message in BAD_FENCE:
        assert run[name].get("failed"), (name, run[name])
        assert run[name]["msg"].startswith(message), (name, run[name]["msg"])
        assert "\n" not in run[name]["msg"]
    assert run["fenced with settings"]["msg"].startswith("Invalid value for 'state': fenced takes a host as it is")
    assert sql("SELECT h.*, (SELECT count(*) FROM host_fence_secret) AS secrets FROM host h ORDER BY name") == before
    assert sql("SELECT count(*) AS n FROM event")[0]["n"] == events


def _monitor_service(engine_options, tmp_path, name):
    return start_monitor(engine_options, tmp_path, name, "--interval", "1", "--grace", "2", "--lease-ttl", "4")


def test_one_monitor_is_active_and_the_standby_takes_over_when_it_dies(engine_options, cluster, sql, tmp_path):
    active = _monitor_service(engine_options, tmp_path, "first")
    standby = None
    try:
        holder = until(lambda: (sql("SELECT holder FROM monitor_lease WHERE expires_at > clock_timestamp()")
                                or [{}])[0].get("holder"), 20, "a monitor holds the lease")
        standby = _monitor_service(engine_options, tmp_path, "second")
        time.sleep(3)
        assert sql("SELECT holder FROM monitor_lease")[0]["holder"] == holder  # the standby waits
        assert sql("SELECT count(*) AS n FROM event WHERE code = 'MONITOR_ACTIVE'")[0]["n"] == 1
        # the active monitor watches: hv2 goes, and it sees it
        cluster["paths"]["hv2"].unlink()
        until(lambda: host_status(sql)["hv2"] == "NonResponsive", 20, "hv2 NonResponsive")
        active.kill()
        active.wait()
        killed = time.time()
        other = until(lambda: (sql("SELECT holder FROM monitor_lease WHERE holder <> %s AND expires_at >"
                                   " clock_timestamp()", holder) or [{}])[0].get("holder"), 60, "the standby active")
        took = time.time() - killed
        assert took < 30 and other.split(":")[1] == str(standby.pid), (took, other)
        # and it watches: hv2 comes back
        node(cluster["paths"]["hv2"])
        until(lambda: host_status(sql)["hv2"] == "Up", 20, "hv2 Up again under the standby")
        epochs = [r["details"]["epoch"] for r in sql("SELECT details FROM event WHERE code = 'MONITOR_ACTIVE'"
                                                     " ORDER BY occurred_at, id")]
        assert len(epochs) == 2 and epochs[1] > epochs[0]
        # each transition was recorded once, by whichever monitor was active
        changes = [r["message"].split(":")[0] for r in sql(
            "SELECT message FROM event WHERE code = 'HOST_STATUS_CHANGED' AND host_name = 'hv2'"
            " ORDER BY occurred_at, id")]
        assert changes == ["Host hv2 is Connecting", "Host hv2 is NonResponsive", "Host hv2 is Up"], changes
        standby.send_signal(signal.SIGTERM)
        assert standby.wait(15) == 0
        assert sql("SELECT holder FROM monitor_lease")[0]["holder"] is None  # it resigned
    finally:
        for proc in (active, standby):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def test_a_monitor_refuses_a_schema_it_does_not_know(engine_options, tmp_path):
    engine_write(engine_options, ["INSERT INTO schema_migration (version, description) VALUES (999, 'the future')"])
    service = _monitor_service(engine_options, tmp_path, "future")
    assert service.wait(30) == 2
    log = (tmp_path / "future.log").read_text()
    assert "schema version 999" in log and "the monitor does not run against a schema it does not know" in log, log


RECONCILE_REFUSALS = [
    ("grace negative", {"grace": -1}, "Invalid value for 'grace': -1 is outside 0-600 seconds"),
    ("grace huge", {"grace": 10 ** 15}, "Invalid value for 'grace': "),
    ("rounds zero", {"rounds": 0}, "Invalid value for 'rounds': 0 is outside 1-100"),
    ("probe newline", {"probe_timeout": "5\n"}, "Invalid value for 'probe_timeout': "),
    ("lease wait", {"lease_wait": 3601}, "Invalid value for 'lease_wait': 3601 is outside 0-3600 seconds"),
    ("wait text", {"wait_timeout": "1e3"}, "Invalid value for 'wait_timeout': '1e3' is not a whole number"),
]


def test_reconcile_refuses_bad_settings_and_is_skipped_in_check_mode(engine_options, cluster, sql):
    cluster["paths"]["hv2"].unlink()  # a pass that ran would make it Connecting
    tasks = [{"name": name, "ignore_errors": True, "virtplane.kvm.reconcile": options}
             for name, options, _message in RECONCILE_REFUSALS]
    run = run_play(tasks, engine=engine_options)
    for name, _options, message in RECONCILE_REFUSALS:
        assert run[name].get("failed") and run[name]["msg"].startswith(message), (name, run[name])
    checked = run_play([{"name": "pass", "virtplane.kvm.reconcile": {}}], engine=engine_options, check=True)
    assert checked["pass"]["_status"] == "skipped", checked["pass"]
    assert host_status(sql) == {"hv1": "Up", "hv2": "Up"}


@pytest.mark.parametrize("policy, moved", [("migrate", ["api", "batch", "web"]), ("ha_only", ["api", "web"]),
                                           ("none", [])])
def test_a_nonoperational_hosts_vms_leave_it_as_the_clusters_resilience_policy_says(
        engine_options, cluster, sql, policy, moved):
    run = run_play([{"name": "policy", "virtplane.kvm.cluster": {"name": "prod", "resilience_policy": policy}}],
                   engine=engine_options)
    assert run["policy"]["cluster"]["resilience_policy"] == policy
    engine_write(engine_options, ["UPDATE host SET status = 'NonOperational', status_reason = 'lost network app'"
                                  " WHERE name = 'hv1'"])
    result = reconcile(engine_options)
    assert not result.get("failed"), result
    # each chosen VM is asked to live-migrate to the scheduler's choice (libvirt's test driver cannot migrate:
    # each attempt fails, and the VM stays where it runs)
    tried = sorted(a.split()[1][:-1] for a in result["actions"] if "off its NonOperational host" in a)
    assert tried == moved, result["actions"]
    assert sql("SELECT count(*) AS n FROM migration")[0]["n"] == len(moved)
    vms = runtime(sql)
    assert {n: (vms[n]["status"], vms[n]["host"]) for n in ("web", "api", "batch")} == {
        n: ("Up", "hv1") for n in ("web", "api", "batch")}, vms


def test_a_vm_that_moved_outside_the_engine_is_found_where_it_went_and_never_started_twice(
        engine_options, cluster, sql):
    ids = cluster["ids"]
    # web went to hv2 behind the engine's back; api runs on both hosts at once; batch stays on hv1
    node(cluster["paths"]["hv1"], [("api", ids["api"]), ("batch", ids["batch"])])
    node(cluster["paths"]["hv2"], [("web", ids["web"]), ("api", ids["api"])])
    result = reconcile(engine_options)
    assert not result.get("failed"), result
    vms = runtime(sql)
    assert (vms["web"]["status"], vms["web"]["host"]) == ("Up", "hv2"), vms["web"]
    assert (vms["api"]["status"], vms["api"]["host"]) == ("Up", "hv1"), vms["api"]  # recorded where it was
    assert "VM web: found on hv2 (moved outside the engine)" in result["actions"]
    assert "VM api: runs on hv1, hv2 at once" in result["actions"]
    assert not [a for a in result["actions"] if "RestartingHA" in a or "restarted" in a or "Down" in a]
    assert sql("SELECT count(*) AS n FROM job WHERE action = 'vm.ha_restart'")[0]["n"] == 0
    reconcile(engine_options, rounds=2, grace=0)
    # said once by each monitor (the service runs one for good; each module run is one), not at every pass
    assert len(sql("SELECT 1 FROM event WHERE code = 'VM_RUNS_TWICE'")) == 2
    assert {r["status"] for r in runtime(sql).values() if r["name"] != "db"} == {"Up"}


def test_a_host_fenced_once_is_fenced_again_after_it_came_back(engine_options, cluster, sql, power):
    ids = cluster["ids"]
    run = run_play([{"name": "fence", "virtplane.kvm.host": {"name": "hv1", "fence": fence_of(power["port"])}}],
                   engine=engine_options)
    assert run["fence"]["changed"], run.output[-2000:]
    cluster["paths"]["hv1"].unlink()
    first = reconcile(engine_options, grace=1, rounds=2)
    assert "host hv1: fenced by its lab agent" in first["actions"], first["actions"]
    # hv1 comes back (booted again): Up, no longer fenced; db starts there
    node(cluster["paths"]["hv1"], [("db", ids["db"])])
    node(cluster["paths"]["hv2"], [("web", ids["web"]), ("api", ids["api"])])
    engine_write(engine_options, [
        "UPDATE vm_runtime SET status = 'Up', reserved_memory_mib = 256, reserved_vcpus = 1, run_host_id ="
        " (SELECT id FROM host WHERE name = 'hv1') WHERE vm_id = '%s'" % ids["db"]])
    back = reconcile(engine_options)
    assert back["reconcile"]["hosts"]["hv1"] == "Up", back
    assert sql("SELECT fenced_at, unreachable_since FROM host WHERE name = 'hv1'") == [
        {"fenced_at": None, "unreachable_since": None}]
    # and it dies again: fenced again, db (not HA) Down
    cluster["paths"]["hv1"].unlink()
    second = reconcile(engine_options, grace=1, rounds=2)
    assert "host hv1: fenced by its lab agent" in second["actions"], second["actions"]
    assert len(sql("SELECT 1 FROM event WHERE code = 'HOST_FENCED' AND host_name = 'hv1'")) == 2
    assert runtime(sql)["db"]["status"] == "Down"
