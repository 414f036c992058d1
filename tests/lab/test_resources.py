"""Storage domains, disks and logical networks on real lab hosts.

A lab of its own (prefix vpres, subnets 10.83/10.84): three hosts (whole machines with systemd), of
which hv1 and hv2 are configured and registered first and hv3 joins later. The engine runs on this
machine (a PostgreSQL server of the tests' own), the other place it can be. The hosts use TCG directly (no KVM probe):
what is under test here is storage and networks, not the domain type.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest

from ansible_collections.virtplane.kvm.plugins.module_utils.virt import _storage
from tests.support.engine import start_monitor, until
from tests.support.lab import heartbeats, host_file, in_host, read_console, wait_for_console
from tests.support.playbook import ROOT, run_plays, start_plays

STATE_DIR = "/var/lib/virtplane-lab-res"
PREFIX = "vpres"
LAB_VARS = {"lab_prefix": PREFIX, "lab_bridge": "vpres0", "lab_subnet": "10.83.0.0/24",
            "lab_data_subnet": "10.84.0.0/24", "lab_state_dir": STATE_DIR, "lab_hosts": 3}
HOSTS = {"hv1": "10.83.0.11", "hv2": "10.83.0.12", "hv3": "10.83.0.13"}
KEY = os.path.join(STATE_DIR, "id_ed25519")
IMAGE = os.path.join(STATE_DIR, "shared", "images", "lab-guest")
SHARED = os.path.join(STATE_DIR, "shared", "domains", "shared")
LAB_TOOL = os.path.join(ROOT, "roles", "lab", "files", "virtplane_lab.py")
ISCSI = {"portal": "10.84.0.2:3260", "target": "iqn.2026-11.dev.virtplane.lab:vpres"}
MIB = 1024 ** 2
SSH_OPTIONS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"

# one pytest-xdist worker runs every lab test, first of all (the group is the largest): two labs at once fight
# over two cores and made the whole run slower (each module's lab is built once, by its own fixture)
pytestmark = [pytest.mark.lab, pytest.mark.xdist_group("lab")]


def lab_tool(*args):
    argv = ["/usr/bin/python3", LAB_TOOL, *args, "--state-dir", STATE_DIR, "--prefix", PREFIX, "--bridge", "vpres0",
            "--subnet", "10.83.0.0/24", "--data-subnet", "10.84.0.0/24"]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def inventory(tmp_path_factory):
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    host_vars = {"ansible_user": "root", "ansible_ssh_private_key_file": KEY, "ansible_ssh_common_args": SSH_OPTIONS,
                 "ansible_python_interpreter": "/usr/bin/python3", "hypervisor_libvirt_transport": "tcp",
                 "hypervisor_allow_plain_tcp": True, "hypervisor_cluster": "lab", "hypervisor_domain_type": "qemu",
                 "hypervisor_lockspace_dir": STATE_DIR + "/shared/lockspace", "hypervisor_probe_image_dir": IMAGE,
                 "hypervisor_network_nic": "eth1", "hypervisor_machine_shared_by": 3}
    data = {"all": {"children": {
        "lab_machine": {"hosts": {"localhost": local}},
        "engine": {"hosts": {"localhost": local}},
        "hypervisors": {"children": {
            "first": {"hosts": {n: {"ansible_host": HOSTS[n]} for n in ("hv1", "hv2")}},
            "later": {"hosts": {"hv3": {"ansible_host": HOSTS["hv3"]}}}},
            "vars": host_vars}}}}
    path = tmp_path_factory.mktemp("inventory") / "hosts.yml"
    path.write_text(json.dumps(data))
    return str(path)


@pytest.fixture(scope="module")
def engine_options_module(postgres):
    from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _provision

    # a short lease: a run killed in a test is recovered a few seconds later, not a minute
    _provision.ensure_database(postgres.superuser_login(), "lab_resources", "virtplane", "lab-resources-password",
                               settings={"reservation_lease_seconds": 5})
    return {"host": postgres.socket_dir, "port": postgres.port, "database": "lab_resources", "user": "virtplane",
            "password": "lab-resources-password"}


@pytest.fixture(scope="module")
def dc(inventory, engine_options_module):
    lab_tool("down")  # what a killed run left behind
    run = run_plays([{"name": "lab", "hosts": "lab_machine", "gather_facts": False, "roles": ["virtplane.kvm.lab"],
                      "vars": LAB_VARS}], inventory=inventory)
    assert run.rc == 0, run.output[-4000:]
    os.makedirs(SHARED, exist_ok=True)
    run = run_plays([{"name": "engine objects", "hosts": "engine", "gather_facts": False, "tasks": [
        {"virtplane.kvm.datacenter": {"name": "lab"}},
        {"virtplane.kvm.cluster": {"name": "lab", "datacenter": "lab"}}]},
        {"name": "hypervisors", "hosts": "first", "gather_facts": False, "roles": ["virtplane.kvm.hypervisor"]}],
        inventory=inventory, engine=engine_options_module)
    assert run.rc == 0, run.output[-4000:]
    yield {"inventory": inventory, "engine": engine_options_module}
    lab_tool("down")


def check_hosts(names=("hv1", "hv2")):
    """Each host checked again, as an administrator would after fixing something (host state refreshed)."""
    return {"name": "check hosts", "loop": list(names), "virtplane.kvm.host": {"name": "{{ item }}",
                                                                               "state": "refreshed"}}


def engine_tasks(dc, tasks, check=False, diff=False):
    run = run_plays([{"hosts": "engine", "gather_facts": False, "tasks": tasks}], inventory=dc["inventory"],
                    engine=dc["engine"], check=check, diff=diff)
    return run


def resources():
    return [
        {"name": "shared", "virtplane.kvm.storage_domain": {"name": "shared", "datacenter": "lab", "type": "posixfs",
                                                            "posixfs": {"path": SHARED}}},
        {"name": "san", "virtplane.kvm.storage_domain": {"name": "san", "datacenter": "lab", "type": "iscsi",
                                                         "iscsi": ISCSI}},
        {"name": "app", "virtplane.kvm.logical_network": {"name": "app", "datacenter": "lab", "vxlan": 100,
                                                          "subnet": "192.168.100.0/24",
                                                          "clusters": [{"name": "lab"}]}},
        # bridged by libvirt on each host alone, optional in the cluster
        {"name": "iso", "virtplane.kvm.logical_network": {"name": "iso", "datacenter": "lab", "mode": "isolated",
                                                          "clusters": [{"name": "lab", "required": False}]}},
    ]


def pools(host):
    import libvirt

    conn = libvirt.open("qemu+tcp://%s/system" % HOSTS[host])
    try:
        return {p.name(): bool(p.isActive()) for p in conn.listAllStoragePools()}, \
            {n.name(): bool(n.isActive()) for n in conn.listAllNetworks()}
    finally:
        conn.close()


def test_domains_and_a_vxlan_network_on_both_hosts(dc):
    run = engine_tasks(dc, resources(), check=True, diff=True)
    assert run.rc == 0, run.output[-3000:]
    assert all(run[t]["changed"] for t in ("shared", "san", "app", "iso"))
    assert run["shared"]["actions"] == ["create", "define pool on hv1", "define pool on hv2"]
    assert run["app"]["diff"]["after"]["vxlan_vni"] == 100
    for host in ("hv1", "hv2"):  # check mode touched no host
        host_pools, host_networks = pools(host)
        assert "vp-shared" not in host_pools and "vp-san" not in host_pools and "vp-app" not in host_networks

    run = engine_tasks(dc, resources(), diff=True)
    assert run.rc == 0, run.output[-3000:]
    for task in ("shared", "san"):
        domain = run[task]["storage_domain"]
        assert domain["status"] == "active", domain
        assert [(h["host"], h["active"]) for h in domain["hosts"]] == [("hv1", True), ("hv2", True)]
    # the target's two LUNs of 1 GiB (less the sector tgt keeps), seen by both hosts at once
    capacities = {h["capacity_bytes"] for h in run["san"]["storage_domain"]["hosts"]}
    assert len(capacities) == 1 and 2 * 1024 ** 3 - 4096 <= capacities.pop() <= 2 * 1024 ** 3
    network = run["app"]["logical_network"]
    assert network["status"] == "realized" and [h["host"] for h in network["hosts"]] == ["hv1", "hv2"]
    for host in ("hv1", "hv2"):
        host_pools, host_networks = pools(host)
        assert host_pools["vp-shared"] and host_pools["vp-san"] and host_networks["vp-app"]
        links = subprocess.run(["ip", "-n", "%s-%s" % (PREFIX, host), "-j", "link"], capture_output=True, text=True,
                               check=True).stdout
        bridge = network["bridge"]
        vxlan = [link for link in json.loads(links) if link["ifname"] == "vx100"]
        assert vxlan and vxlan[0].get("master") == bridge and vxlan[0]["mtu"] == 1450

    assert run["iso"]["logical_network"]["status"] == "realized"
    for host in ("hv1", "hv2"):
        assert pools(host)[1]["vp-iso"]

    again = engine_tasks(dc, resources())
    assert again.changed_tasks == [], again.changed_tasks
    check = engine_tasks(dc, resources(), check=True)
    assert check.changed_tasks == []


GITOPS_NAMES = {"vms": ("gs1", "gs2"), "networks": ("backup",), "groups": ("gitops-apart",)}


def gitops_description(memory="128MiB", mtu=1400, vms=GITOPS_NAMES["vms"], prune=False, prune_running=False):
    """The data center 'lab' in inventory variables, in the layout of inventories/example: two VMs of the lab
    image pinned apart and pinging each other over the VXLAN network app, a network without VMs (backup) whose
    MTU can change, an affinity group; app, iso and the cluster as they are."""
    networks = [dict(task["virtplane.kvm.logical_network"]) for task in resources()
                if "virtplane.kvm.logical_network" in task]
    networks.append({"name": "backup", "datacenter": "lab", "vxlan": 201, "mtu": mtu, "clusters": [{"name": "lab"}]})
    addresses = {"gs1": ("192.168.100.61", "192.168.100.62", "hv1"), "gs2": ("192.168.100.62", "192.168.100.61", "hv2")}
    described = [lab_vm(name, addresses[name][0], addresses[name][1], addresses[name][2], tags=["gitops"],
                        memory=memory if name == "gs1" else "128MiB", memory_max="192MiB") for name in vms]
    return {
        "datacenter.yml": {"virtplane_datacenter": "lab", "virtplane_cluster": "lab", "virtplane_prune": prune,
                           "virtplane_prune_running": prune_running},
        "networks.yml": {"virtplane_logical_networks": networks},
        "vms.yml": {"virtplane_vms": described,
                    "virtplane_affinity_groups": [{"name": "gitops-apart", "cluster": "lab", "vm_rule": "negative",
                                                   "vm_enforcing": False, "vms": list(vms)}] if vms else []},
    }


def apply_description(dc, directory, files, check=False, hypervisors=None):
    """ansible-playbook -i <directory> playbooks/site.yml's data center part, on an inventory laid out as
    inventories/example/production: hosts.yml and group_vars/all/*.yml; ``hypervisors``: {lab host: its vars}
    for the group hypervisors (the lab fixture's variables with them)."""
    group_vars = directory / "group_vars" / "all"
    group_vars.mkdir(parents=True, exist_ok=True)
    for old in group_vars.iterdir():
        old.unlink()
    groups = {"engine": {"hosts": {"localhost": {"ansible_connection": "local",
                                                 "ansible_python_interpreter": sys.executable}}}}
    if hypervisors:
        with open(dc["inventory"]) as handle:
            lab_vars = json.load(handle)["all"]["children"]["hypervisors"]["vars"]
        groups["hypervisors"] = {"hosts": {name: dict(values, ansible_host=HOSTS[name])
                                           for name, values in hypervisors.items()}, "vars": lab_vars}
    (directory / "hosts.yml").write_text(json.dumps({"all": {"children": groups}}))
    for name, content in files.items():
        (group_vars / name).write_text(json.dumps(content))
    engine = dc["engine"]
    return run_plays([{"import_playbook": os.path.join(ROOT, "playbooks", "datacenter.yml")}], check=check,
                     inventory=str(directory), extra_env={
                         "VIRTPLANE_ENGINE_HOST": engine["host"], "VIRTPLANE_ENGINE_PORT": str(engine["port"]),
                         "VIRTPLANE_ENGINE_DATABASE": engine["database"],
                         "VIRTPLANE_ENGINE_PASSWORD": engine["password"]})


def engine_inventory(dc, directory, *args, program="ansible-inventory"):
    """ansible-inventory (or ``program``) on a virtplane.kvm.engine configuration that reads this lab's engine,
    whose VMs without an address are reached through their consoles."""
    path = directory / "lab.virtplane.yml"
    path.write_text(json.dumps({"plugin": "virtplane.kvm.engine", "engine": dc["engine"], "hosts": True,
                                "console": True}))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, "build", "collections"),
               ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_INVENTORY_ENABLED="virtplane.kvm.engine",
               ANSIBLE_INVENTORY_UNPARSED_FAILED="true", ANSIBLE_NOCOLOR="1")
    return subprocess.run([os.path.join(os.path.dirname(sys.executable), program), "-i", str(path), *args],
                          env=env, cwd=ROOT, capture_output=True, text=True, check=False)


def graph_groups(graph):
    """{group: [its hosts]} of ansible-inventory --graph's output (groups one level under @all)."""
    groups, current = {}, None
    for line in graph.splitlines():
        found = re.search(r"\|--(@?)([^:\s]+):?$", line)
        if not found:
            continue
        if found.group(1):
            current = groups.setdefault(found.group(2), [])
        elif current is not None:
            current.append(found.group(2))
    return groups


def test_a_described_data_center_is_applied_reapplied_changed_listed_and_pruned_on_the_lab(dc, sql_lab, tmp_path):
    """The GitOps loop on real hosts: the description applied (VMs booted and pinging across hosts), applied again
    unchanged, one VM's memory and one network's MTU changed (exactly those), the VMs listed by the inventory
    plugin, then pruned away.

    Its prune makes the description the whole data center 'lab' for the kinds it lists (VMs, networks,
    affinity groups, clusters): it runs where the file puts it, before the tests that make VMs of their own."""
    vms_task = "VMs, in one call (read in bulk, changed where they differ)"
    registration = "virtplane.kvm.hypervisor : Register the host in the engine, in a cluster this run creates"
    # a merge request's check run: a new cluster and a host moved into it, which the hypervisor role checks in
    # check mode; its registration is planned, not checked against an engine that has no such cluster yet
    files = gitops_description()
    files["datacenter.yml"]["virtplane_clusters"] = [{"name": "lab", "datacenter": "lab"},
                                                     {"name": "lab-b", "datacenter": "lab"}]
    planned = apply_description(dc, tmp_path / "repo", files, check=True,
                                hypervisors={"hv2": {"hypervisor_cluster": "lab-b"}})
    assert planned.rc == 0, planned.output[-3000:]
    assert registration in planned.changed_tasks and "Clusters" in planned.changed_tasks, planned.changed_tasks
    assert "create cluster 'lab-b'" in planned.output
    assert sql_lab("SELECT c.name FROM host h JOIN cluster c ON c.id = h.cluster_id WHERE h.name = 'hv2'") == [
        {"name": "lab"}]
    assert sql_lab("SELECT name FROM cluster WHERE name = 'lab-b'") == []
    try:
        planned = apply_description(dc, tmp_path / "repo", gitops_description(), check=True)
        assert planned.rc == 0, planned.output[-3000:]
        # the affinity group of VMs still to be created is planned by the first task, not checked by its own
        assert sorted(planned.changed_tasks) == ["Logical networks", vms_task], planned.output[-3000:]
        assert "create affinity group 'gitops-apart' (cluster lab)" in planned.output
        assert sql_lab("SELECT name FROM vm WHERE name LIKE 'gs%%'") == []  # check mode changed nothing

        applied = apply_description(dc, tmp_path / "repo", gitops_description())
        assert applied.rc == 0, applied.output[-3000:]
        # the last task waited for each console to report its peer's answer: a ping across the two hosts
        waited = applied["Wait for the VMs' consoles to say that each reaches its peer"]
        consoles = {vm["name"]: vm for vm in waited["vms"]}
        assert sorted(consoles) == ["gs1", "gs2"]
        assert {consoles[n]["host"] for n in consoles} == {"hv1", "hv2"}
        assert "VIRTPLANE-GUEST-PING 192.168.100.62 ok" in consoles["gs1"]["console_log"]
        for host in ("hv1", "hv2"):
            assert pools(host)[1]["vp-backup"]

        again = apply_description(dc, tmp_path / "repo", gitops_description())
        assert again.rc == 0 and again.changed_tasks == [], again.changed_tasks

        changed = apply_description(dc, tmp_path / "repo", gitops_description(memory="160MiB", mtu=1300))
        assert changed.rc == 0, changed.output[-3000:]
        assert sorted(changed.changed_tasks) == ["Logical networks", vms_task], changed.output[-3000:]
        # the first task found what differs: the VM task got gs1 alone, the network task backup alone
        assert changed["Check the description as a whole, before anything changes"]["pending"]["vms"] == [0]
        assert [(vm["name"], vm["changed"]) for vm in changed[vms_task]["vms"]] == [("gs1", True)]
        assert [n["logical_network"]["name"] for n in changed["Logical networks"]["results"] if n["changed"]] == [
            "backup"]
        assert sql_lab("SELECT memory_mib FROM vm WHERE name = 'gs1'") == [{"memory_mib": 160}]
        for host in ("hv1", "hv2"):
            links = json.loads(subprocess.run(["ip", "-n", "%s-%s" % (PREFIX, host), "-j", "link"],
                                              capture_output=True, text=True, check=True).stdout)
            assert [link["mtu"] for link in links if link["ifname"] == "vx201"] == [1300]

        graph = engine_inventory(dc, tmp_path, "--graph")
        assert graph.returncode == 0, graph.stderr
        groups = graph_groups(graph.stdout)
        ours = {g: [m for m in groups.get(g, []) if m.startswith("gs")]
                for g in ("cluster_lab", "tag_gitops", "status_up", "host_hv1", "host_hv2")}
        assert ours == {"cluster_lab": ["gs1", "gs2"], "tag_gitops": ["gs1", "gs2"], "status_up": ["gs1", "gs2"],
                        "host_hv1": ["gs1"], "host_hv2": ["gs2"]}, graph.stdout
        assert {"hv1", "hv2"} <= set(groups.get("hypervisors_lab", [])), graph.stdout
        listed = json.loads(engine_inventory(dc, tmp_path, "--host", "gs1").stdout)["virtplane_vm"]
        # strings from the engine are marked unsafe (never templated): {"__ansible_unsafe": value}
        assert [v["__ansible_unsafe"] if isinstance(v, dict) else v for v in (listed["host"], listed["memory"])] \
            == ["hv1", "160 MiB"]
        # an ad-hoc command reaches gs1 through its interactive console (the engine knows no address of it): the
        # guest's own address, and its peer on the other host answering
        adhoc = engine_inventory(dc, tmp_path, "gs1", "-m", "ansible.builtin.raw", "-a",
                                 "ip -4 -o addr show; ping -c 1 -W 3 192.168.100.62", program="ansible")
        assert adhoc.returncode == 0, adhoc.stdout + adhoc.stderr
        assert "192.168.100.61/24" in adhoc.stdout and "1 packets received" in adhoc.stdout, adhoc.stdout
        failed = engine_inventory(dc, tmp_path, "gs2", "-m", "ansible.builtin.raw", "-a", "echo gone >&2; exit 7",
                                  program="ansible")
        assert failed.returncode != 0 and "rc=7" in failed.stdout and "gone" in failed.stdout, failed.stdout
        slow = engine_inventory(dc, tmp_path, "gs2", "-m", "ansible.builtin.raw", "-a", "sleep 20", "-e",
                                "ansible_virtplane_command_timeout=2", program="ansible")
        assert slow.returncode != 0 and "the command did not finish within 2 s" in slow.stdout, slow.stdout

        # the VMs gone from the description: running, so the prune is refused until it may power them off
        refused = apply_description(dc, tmp_path / "repo", gitops_description(vms=(), prune=True))
        assert refused.rc != 0 and "prune_running" in refused.output, refused.output[-3000:]
        assert sorted(r["name"] for r in sql_lab("SELECT name FROM vm WHERE name LIKE 'gs%%'")) == ["gs1", "gs2"]
    finally:
        files = gitops_description(vms=(), prune=True, prune_running=True)
        files["networks.yml"]["virtplane_logical_networks"] = [
            n for n in files["networks.yml"]["virtplane_logical_networks"] if n["name"] != "backup"]
        pruned = apply_description(dc, tmp_path / "repo", files)
    assert pruned.rc == 0, pruned.output[-3000:]
    assert pruned.changed_tasks == ["Remove what the description no longer names"], pruned.changed_tasks
    assert sql_lab("SELECT name FROM vm WHERE name LIKE 'gs%%'") == []
    assert sql_lab("SELECT name FROM logical_network WHERE name = 'backup'") == []
    for host in ("hv1", "hv2"):
        assert "gs1" not in domains_on(host) and "gs2" not in domains_on(host)
        assert "vp-backup" not in pools(host)[1]


def test_a_path_missing_on_one_host_is_refused_naming_it(dc, sql_lab):
    # each lab host has its own root: this directory exists on hv1 only
    in_host(KEY, HOSTS["hv1"], "mkdir -p /var/lib/libvirt/images/only-hv1")
    options = {"name": "local", "datacenter": "lab", "type": "posixfs",
               "posixfs": {"path": "/var/lib/libvirt/images/only-hv1"}}
    run = engine_tasks(dc, [{"name": "local", "ignore_errors": True, "virtplane.kvm.storage_domain": options}])
    message = run["local"]["msg"]
    assert message.startswith("Cannot create storage domain 'local': hosts hv2 cannot realize this posixfs domain: "
                              "hv2: cannot open directory '/var/lib/libvirt/images/only-hv1'"), message
    assert sql_lab("SELECT name FROM storage_domain WHERE name = 'local'") == []
    assert "vp-local" not in pools("hv1")[0]  # nothing half-made on the host that had the path

    # the same directory as a 'dir' domain of hv1 alone; NFS, which no lab host can mount, is refused
    local = dict(options, type="dir", host="hv1", dir=options.pop("posixfs"))
    nfs = {"name": "nas", "datacenter": "lab", "type": "nfs", "nfs": {"server": "10.84.0.1", "export": "/vm"}}
    run = engine_tasks(dc, [{"name": "dir", "virtplane.kvm.storage_domain": local},
                            {"name": "nfs", "ignore_errors": True, "virtplane.kvm.storage_domain": nfs}])
    assert [(h["host"], h["active"]) for h in run["dir"]["storage_domain"]["hosts"]] == [("hv1", True)]
    assert run["dir"]["storage_domain"]["status"] == "active"
    assert "vp-local" in pools("hv1")[0] and "vp-local" not in pools("hv2")[0]
    assert run["nfs"]["msg"].startswith("Cannot create storage domain 'nas': hosts hv1, hv2 cannot realize this nfs "
                                        "domain: hv1: "), run["nfs"]["msg"]
    run = engine_tasks(dc, [{"name": "remove", "virtplane.kvm.storage_domain": {"name": "local", "state": "absent"}}])
    assert run["remove"]["changed"] and "vp-local" not in pools("hv1")[0]


def test_a_pool_lost_on_one_host_is_reported_and_restored(dc):
    import libvirt

    conn = libvirt.open("qemu+tcp://%s/system" % HOSTS["hv2"])
    try:
        conn.storagePoolLookupByName("vp-shared").destroy()  # behind the engine's back
    finally:
        conn.close()
    info = {"name": ["shared"], "refresh": True}
    run = engine_tasks(dc, [{"name": "info", "virtplane.kvm.storage_domain_info": info}])
    shared = run["info"]["storage_domains"][0]
    assert (shared["status"], shared["missing_on"]) == ("partial", ["hv2"])
    run = engine_tasks(dc, [check_hosts(),
                            {"name": "info", "virtplane.kvm.storage_domain_info": {"name": ["shared"]}}])
    assert run["info"]["storage_domains"][0]["status"] == "active"
    assert pools("hv2")[0]["vp-shared"]


def test_hosts_kept_out_for_a_missing_directory_come_back_when_the_domain_is_applied_again(dc, sql_lab):
    import libvirt

    path = os.path.join(STATE_DIR, "shared", "domains", "later")
    os.makedirs(path, exist_ok=True)
    task = {"name": "later", "virtplane.kvm.storage_domain": {"name": "later", "datacenter": "lab",
                                                              "type": "posixfs", "posixfs": {"path": path}}}
    try:
        run = engine_tasks(dc, [task])
        assert run.rc == 0, run.output[-3000:]
        # the hosts lose the pool and its directory (a lab rebuilt from scratch): a check keeps them out
        for host in ("hv1", "hv2"):
            conn = libvirt.open("qemu+tcp://%s/system" % HOSTS[host])
            try:
                pool = conn.storagePoolLookupByName("vp-later")
                pool.destroy()
                pool.undefine()
            finally:
                conn.close()
        os.rmdir(path)
        engine_tasks(dc, [check_hosts()])
        statuses = sql_lab("SELECT name, status, status_reason FROM host WHERE name IN ('hv1', 'hv2') ORDER BY name")
        assert [r["status"] for r in statuses] == ["NonOperational"] * 2, statuses
        assert "storage domain later: cannot open directory" in statuses[0]["status_reason"]
        # the directory is back and the domain applied again: the hosts are Up at once, no host check needed
        os.makedirs(path)
        run = engine_tasks(dc, [task])
        assert run["later"]["changed"] and run["later"]["storage_domain"]["status"] == "active", run.output[-3000:]
        assert sql_lab("SELECT status FROM host WHERE name IN ('hv1', 'hv2')") == [{"status": "Up"}] * 2
    finally:
        engine_tasks(dc, [{"name": "remove", "virtplane.kvm.storage_domain": {"name": "later", "state": "absent"}},
                          check_hosts()])
        shutil.rmtree(path, ignore_errors=True)


def disk(name, domain="shared", **options):
    return {"name": name, "ignore_errors": True,
            "virtplane.kvm.disk": dict(name=name, storage_domain=domain, **options)}


def test_disks_created_grown_imported_and_iscsi_luns(dc, tmp_path, sql_lab):
    image = str(tmp_path / "base.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", image, "96M"], check=True)
    subprocess.run(["qemu-io", "-c", "write -P 0x5a 0 24M", image], check=True, capture_output=True)
    run = engine_tasks(dc, [disk("data", size="64MiB"), disk("base", source=image)])
    assert run.rc == 0, run.output[-3000:]
    assert run["data"]["disk"]["size_bytes"] == 64 * MIB and run["data"]["disk"]["format"] == "qcow2"
    assert run["base"]["actions"][0].startswith("import %s" % image) and run["base"]["actions"][-1] == "progress 100%"
    assert run["base"]["disk"]["size_bytes"] == 96 * MIB
    compare = subprocess.run(["qemu-img", "compare", image, os.path.join(SHARED, "base.qcow2")],
                             capture_output=True, text=True, check=False)
    assert compare.returncode == 0, compare.stdout + compare.stderr

    run = engine_tasks(dc, [disk("data", size="128MiB"), disk("data", size="128MiB")], diff=True)
    grown = [r for r in run.results if r["task"] == "data"]
    assert grown[0]["result"]["diff"] == {"before": {"size_bytes": 64 * MIB, "size": "64 MiB"},
                                          "after": {"size_bytes": 128 * MIB, "size": "128 MiB"}}
    assert not grown[1]["result"]["changed"]
    info = subprocess.run(["qemu-img", "info", "--output=json", os.path.join(SHARED, "data.qcow2")],
                          capture_output=True, text=True, check=True).stdout
    assert json.loads(info)["virtual-size"] == 128 * MIB
    run = engine_tasks(dc, [disk("data", size="32MiB"), disk("lun-by-size", domain="san", size="1GiB"),
                            disk("lun1", domain="san", lun=1),
                            {"name": "remove shared", "ignore_errors": True,
                             "virtplane.kvm.storage_domain": {"name": "shared", "state": "absent"}}])
    assert "shrinking it to 32 MiB would destroy data" in run["data"]["msg"]
    assert "libvirt cannot create volumes on it" in run["lun-by-size"]["msg"]
    assert run["lun1"]["disk"]["lun"] == 1 and 1024 ** 3 - 4096 <= run["lun1"]["disk"]["size_bytes"] <= 1024 ** 3
    assert run["remove shared"]["msg"] == ("Cannot remove storage domain 'shared': it still has disks base, data")

    # a volume the engine has no disk for is neither adopted nor overwritten, and no disk is recorded
    orphan = os.path.join(SHARED, "orphan.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", orphan, "16M"], check=True)
    before = os.stat(orphan)
    run = engine_tasks(dc, [disk("orphan", size="64MiB")])
    assert "already holds a volume orphan.qcow2 that the engine has no disk for" in run["orphan"]["msg"]
    assert (os.stat(orphan).st_mtime_ns, os.stat(orphan).st_size) == (before.st_mtime_ns, before.st_size)
    assert sql_lab("SELECT name FROM disk WHERE name = 'orphan'") == []
    os.unlink(orphan)

    # the engine fails after the volume was made and filled: the volume goes, and no row stays
    sql_lab("CREATE FUNCTION lab_refuse_disk() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'engine lost its disk table'; END $$")
    sql_lab("CREATE TRIGGER lab_refuse_disk BEFORE UPDATE ON disk FOR EACH ROW"
            " WHEN (NEW.name = 'doomed' AND NEW.status = 'ok') EXECUTE FUNCTION lab_refuse_disk()")
    try:
        run = engine_tasks(dc, [disk("doomed", source=image)])
    finally:
        sql_lab("DROP TRIGGER lab_refuse_disk ON disk")
        sql_lab("DROP FUNCTION lab_refuse_disk()")
    assert "engine lost its disk table" in run["doomed"]["msg"]
    assert not os.path.exists(os.path.join(SHARED, "doomed.qcow2"))
    assert sql_lab("SELECT name FROM disk WHERE name = 'doomed'") == []
    run = engine_tasks(dc, [disk("doomed", source=image), disk("doomed", state="absent")])
    assert run.rc == 0 and run.results[0]["result"]["changed"], run.output[-3000:]

    run = engine_tasks(dc, [dict(disk(n, state="absent"), ignore_errors=False) for n in ("data", "base")]
                       + [dict(disk("lun1", domain="san", state="absent"), ignore_errors=False)])
    assert run.rc == 0, run.output[-3000:]
    assert not os.path.exists(os.path.join(SHARED, "data.qcow2")) and not os.path.exists(
        os.path.join(SHARED, "base.qcow2"))


def lab_vm(name, address, peer, host, **options):
    """A VM of the lab image on the VXLAN network ``app``, pinged by and pinging ``peer``."""
    values = {"name": name, "cluster": "lab", "memory": "128MiB", "vcpus": 1, "host": [host],
              "nics": [{"name": "eth0", "network": "app"}],
              "boot": {"kernel": IMAGE + "/vmlinuz", "initrd": IMAGE + "/initrd.img",
                       "cmdline": "console=ttyS0 panic=-1 vp.ip=%s/24 vp.name=%s vp.ping=%s" % (address, name, peer)},
              "state": "running"}
    values.update(options)
    return values


def console_of(host, name):
    return host_file(STATE_DIR, host, "/var/lib/virtplane/local/%s-console.log" % name)


def domains_on(host):
    import libvirt

    conn = libvirt.open("qemu+tcp://%s/system" % HOSTS[host])
    try:
        return sorted(d.name() for d in conn.listAllDomains(0))
    finally:
        conn.close()


def test_vms_boot_ping_change_live_stop_on_acpi_and_go_with_their_disks(dc, sql_lab):
    """Two VMs of the vm module on different hosts, on the VXLAN network: the whole life of a VM on real hosts."""
    import libvirt

    disks = [{"name": "web-data", "storage_domain": "shared", "size": "64MiB"}]
    web = lab_vm("web", "192.168.100.31", "192.168.100.32", "hv1", disks=disks, memory_max="256MiB",
                 cloud_init={"meta_data": {"local-hostname": "web.lab"}, "user_data": {"packages": []}})
    peer = lab_vm("peer", "192.168.100.32", "192.168.100.31", "hv2")
    try:
        # check mode changes nothing, in the engine or on the hosts
        run = engine_tasks(dc, [{"name": "vms", "virtplane.kvm.vm": {"vms": [web, peer]}}], check=True, diff=True)
        assert run.rc == 0, run.output[-3000:]
        assert run["vms"]["changed"] and "web: start on hv1" in run["vms"]["actions"]
        assert sql_lab("SELECT name FROM vm WHERE name IN ('web', 'peer')") == []
        assert "web" not in domains_on("hv1") and "peer" not in domains_on("hv2")

        for host, name in (("hv1", "web"), ("hv2", "peer")):
            in_host(KEY, HOSTS[host], "rm -f /var/lib/virtplane/local/%s-console.log" % name)
        run = engine_tasks(dc, [{"name": "vms", "virtplane.kvm.vm": {"vms": [web, peer]}}])
        assert run.rc == 0, run.output[-3000:]
        started = {v["name"]: v for v in run["vms"]["vms"]}
        assert (started["web"]["status"], started["web"]["host"]) == ("Up", "hv1")
        assert (started["peer"]["status"], started["peer"]["host"]) == ("Up", "hv2")
        assert "web" in domains_on("hv1") and "peer" in domains_on("hv2")
        web_id = started["web"]["id"]
        console = wait_for_console(console_of("hv1", "web"), "VIRTPLANE-GUEST-PING 192.168.100.32 ok", timeout=120)
        assert "VIRTPLANE-GUEST-PING 192.168.100.32 ok" in console, console[-2000:]
        # the NoCloud seed the engine wrote reached the guest (it reads it once its network is up)
        console = wait_for_console(console_of("hv1", "web"), "VIRTPLANE-GUEST-SEED", timeout=60)
        assert "VIRTPLANE-GUEST-SEED instance-id=%s local-hostname=web.lab" % web_id in console, console[-2000:]
        assert "VIRTPLANE-GUEST-PING 192.168.100.31 ok" in wait_for_console(
            console_of("hv2", "peer"), "VIRTPLANE-GUEST-PING 192.168.100.31 ok", timeout=60)
        # the engine reads the console back through libvirt
        run = engine_tasks(dc, [{"name": "info", "virtplane.kvm.vm_info": {"name": ["web"], "console_log": True}}])
        assert "VIRTPLANE-GUEST-READY ip=192.168.100.31" in run["info"]["vms"][0]["console_log"]

        # a second run changes nothing
        run = engine_tasks(dc, [{"name": "vms", "virtplane.kvm.vm": {"vms": [web, peer]}}])
        assert run.rc == 0 and not run["vms"]["changed"], run.output[-3000:]
        # and reads in bulk: one read-only connection to each host that runs one of them, no event, no job
        from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _db
        from ansible_collections.virtplane.kvm.plugins.module_utils.services import _vm

        events, jobs = len(sql_lab("SELECT id FROM event")), len(sql_lab("SELECT id FROM job"))
        engine = _db.connect(dc["engine"])
        try:
            specs = [_vm.VmSpec(**vm) for vm in (web, peer)]
            assert [o.changed for o in _vm.ensure_many(engine, specs)] == [False, False]
            uris = sql_lab("SELECT libvirt_uri FROM host WHERE name IN ('hv1', 'hv2') ORDER BY libvirt_uri")
            assert sorted(engine.hypervisors.opened) == [(r["libvirt_uri"], True) for r in uris]
        finally:
            engine.close()
        assert (len(sql_lab("SELECT id FROM event")), len(sql_lab("SELECT id FROM job"))) == (events, jobs)

        # live: memory within its maximum, a disk plugged (the disk module on the real VM) and grown;
        # a new kernel command line waits for the next start
        changed_web = dict(web, memory="192MiB", boot=dict(web["boot"], cmdline=web["boot"]["cmdline"].replace(
            "192.168.100.31", "192.168.100.33")))
        run = engine_tasks(dc, [{"name": "change", "virtplane.kvm.vm": changed_web},
                                {"name": "attach", "virtplane.kvm.disk": {
                                    "name": "hot", "storage_domain": "shared", "size": "64MiB", "vm": "web"}},
                                {"name": "grow", "virtplane.kvm.disk": {
                                    "name": "hot", "storage_domain": "shared", "size": "96MiB"}}], diff=True)
        assert run.rc == 0, run.output[-3000:]
        assert "set memory to 192 MiB live" in run["change"]["actions"]
        assert run["change"]["pending_restart"] == ["boot"]
        assert run["change"]["diff"]["after"]["memory_mib"] == 192
        conn = libvirt.open("qemu+tcp://%s/system" % HOSTS["hv1"])
        try:
            # the guest's balloon driver gives the memory back in its own time
            deadline = time.monotonic() + 30
            while conn.lookupByName("web").info()[2] != 192 * 1024 and time.monotonic() < deadline:
                time.sleep(0.5)
            assert conn.lookupByName("web").info()[2] == 192 * 1024
            assert _storage.live_disk_targets(conn, "web")["vdb"] == ("vp-shared", "hot.qcow2")
            assert conn.lookupByName("web").blockInfo("vdb")[0] == 96 * MIB
        finally:
            conn.close()
        assert run["attach"]["actions"][-1] == "plug into the running guest"
        # a disk of one VM is refused to another
        run = engine_tasks(dc, [{"name": "steal", "ignore_errors": True, "virtplane.kvm.vm": dict(
            peer, disks=[{"name": "hot", "storage_domain": "shared"}])}])
        assert "disk 'hot' of storage domain 'shared' is attached to VM 'web'" in run["steal"]["msg"]

        # snapshotted with its memory while it runs (its seed CD-ROM, its NIC on the VXLAN network), reverted to
        # it: QEMU starts again from the snapshot, the VM stays on its host (what comes back: the test below)
        run = engine_tasks(dc, [
            {"name": "snapshot", "virtplane.kvm.snapshot": {"vm": "web", "name": "live"}},
            {"name": "revert", "virtplane.kvm.snapshot": {"vm": "web", "name": "live", "state": "reverted"}},
            {"name": "delete", "virtplane.kvm.snapshot": {"vm": "web", "name": "live", "state": "absent"}}])
        assert run.rc == 0, run.output[-3000:]
        assert run["snapshot"]["snapshot"]["memory"] and run["snapshot"]["snapshot"]["disks"] == [
            {"name": "web-data", "storage_domain": "shared", "target": "vda"},
            {"name": "hot", "storage_domain": "shared", "target": "vdb"}]
        assert run["revert"]["actions"][0].startswith("revert VM web to snapshot live on hv1")
        assert "web" in domains_on("hv1") and sql_lab("SELECT name FROM snapshot") == []

        # suspend: the memory goes to a file on the host and the domain ends; resumed, the guest counts on
        run = engine_tasks(dc, [{"name": "suspend", "virtplane.kvm.vm": {"name": "web", "state": "suspended"}}])
        assert run.rc == 0, run.output[-3000:]
        assert run["suspend"]["actions"] == ["save its memory on hv1"]
        assert (run["suspend"]["vm"]["status"], run["suspend"]["vm"]["suspended_on"]) == ("Suspended", "hv1")
        assert "web" not in domains_on("hv1")
        assert os.path.exists(host_file(STATE_DIR, "hv1", "/var/lib/virtplane/local/web.save"))
        before = read_console(console_of("hv1", "web"))
        counted = heartbeats(before)
        run = engine_tasks(dc, [{"name": "stop", "ignore_errors": True, "virtplane.kvm.vm": {
            "name": "web", "state": "stopped"}}, {"name": "resume", "virtplane.kvm.vm": {"name": "web",
                                                                                         "state": "running"}}])
        assert "stopping it discards its memory" in run["stop"]["msg"]
        assert run["resume"]["actions"] == ["resume on hv1"] and run["resume"]["vm"]["status"] == "Up"
        assert run["resume"]["vm"]["pending_restart"] == ["boot"]  # it is the guest it was
        deadline = time.monotonic() + 30
        after = []
        while time.monotonic() < deadline and not after:
            now = read_console(console_of("hv1", "web"))
            # what the resumed guest printed: the log goes on, or starts again if QEMU truncated it
            printed = now[len(before):] if now.startswith(before) else now
            after = heartbeats(printed)
            time.sleep(1)
        assert after and min(after) > max(counted), (counted[-3:], after[:3])
        assert not os.path.exists(host_file(STATE_DIR, "hv1", "/var/lib/virtplane/local/web.save"))

        # stop: the ACPI power button, and the guest powers off by itself
        run = engine_tasks(dc, [{"name": "stop", "virtplane.kvm.vm": {"name": "web", "state": "stopped",
                                                                      "stop_timeout": 60}}])
        assert run.rc == 0, run.output[-3000:]
        assert run["stop"]["actions"] == ["shut down (ACPI) on hv1"] and run["stop"]["vm"]["status"] == "Down"
        assert "VIRTPLANE-GUEST-POWEROFF" in read_console(console_of("hv1", "web"))
        assert "web" not in domains_on("hv1")
        assert not os.path.exists(host_file(STATE_DIR, "hv1", "/var/lib/virtplane/local/web-seed.iso"))
        assert sql_lab("SELECT r.status, r.run_host_id, r.reserved_memory_mib FROM vm_runtime r JOIN vm v"
                       " ON v.id = r.vm_id WHERE v.name = 'web'") == [
            {"status": "Down", "run_host_id": None, "reserved_memory_mib": 0}]

        # snapshotted stopped, and its disks reverted to it
        run = engine_tasks(dc, [
            {"name": "snapshot", "virtplane.kvm.snapshot": {"vm": "web", "name": "stopped"}},
            {"name": "revert", "virtplane.kvm.snapshot": {"vm": "web", "name": "stopped", "state": "reverted"}},
            {"name": "delete", "virtplane.kvm.snapshot": {"vm": "web", "name": "stopped", "state": "absent"}}])
        assert run.rc == 0, run.output[-3000:]
        assert run["snapshot"]["snapshot"]["memory"] is False
        assert run["revert"]["actions"] == ["revert the disks of VM web to snapshot stopped on hv1"]

        # a template of the stopped VM: its disks copied; VMs made from it, thin clones and full copies
        run = engine_tasks(dc, [
            {"name": "running source", "ignore_errors": True, "virtplane.kvm.template": {
                "name": "tpl", "vm": "peer", "storage_domain": "shared"}},
            {"name": "template", "virtplane.kvm.template": {"name": "tpl", "vm": "web", "storage_domain": "shared"}},
            {"name": "again", "virtplane.kvm.template": {"name": "tpl", "vm": "web", "storage_domain": "shared"}},
            {"name": "thin", "virtplane.kvm.vm": {"name": "clone1", "cluster": "lab", "template": "tpl",
                                                  "host": ["hv1"], "state": "running"}},
            {"name": "full", "virtplane.kvm.vm": {"name": "clone2", "cluster": "lab", "template": "tpl",
                                                  "clone": "full"}},
            {"name": "thin again", "virtplane.kvm.vm": {"name": "clone1", "template": "tpl", "state": "running"}},
            {"name": "in use", "ignore_errors": True, "virtplane.kvm.template": {"name": "tpl", "state": "absent"}}])
        assert "it is Up; a template is made from a stopped VM" in run["running source"]["msg"], run.output[-3000:]
        assert run["template"]["actions"] == ["create", "copy disk web-data to shared", "copy disk hot to shared"]
        assert not run["again"]["changed"]
        assert [d["name"] for d in run["template"]["template"]["disks"]] == ["tpl-web-data", "tpl-hot"]
        assert run["thin"]["vm"]["status"] == "Up" and run["thin"]["vm"]["memory_mib"] == 192
        assert [d["name"] for d in run["thin"]["vm"]["disks"]] == ["clone1-web-data", "clone1-hot"]
        assert "thin clone of disk tpl-web-data" in run["thin"]["actions"]
        assert not run["thin again"]["changed"]
        assert "thin clones stand on its disks (disks clone1-hot, clone1-web-data of VMs clone1)" in \
            run["in use"]["msg"]
        conn = libvirt.open("qemu+tcp://%s/system" % HOSTS["hv1"])
        try:
            pool = conn.storagePoolLookupByName("vp-shared")
            pool.refresh(0)
            assert _storage.backing_path(pool.storageVolLookupByName("clone1-web-data.qcow2")) == os.path.join(
                SHARED, "tpl-web-data.qcow2")
            assert _storage.backing_path(pool.storageVolLookupByName("clone2-web-data.qcow2")) is None
        finally:
            conn.close()
        assert "VIRTPLANE-GUEST-READY ip=192.168.100.33" in wait_for_console(
            console_of("hv1", "clone1"), "VIRTPLANE-GUEST-READY", timeout=90)
        run = engine_tasks(dc, [
            {"name": "clones", "virtplane.kvm.vm": {"vms": [{"name": "clone1", "state": "absent", "force": True},
                                                            {"name": "clone2", "state": "absent"}]}},
            {"name": "remove", "virtplane.kvm.template": {"name": "tpl", "state": "absent"}}])
        assert run.rc == 0, run.output[-3000:]
        assert run["remove"]["actions"] == ["remove disk tpl-hot", "remove disk tpl-web-data", "remove"]
        assert _volumes("tpl-") == [] and _volumes("clone") == []

        # start again, elsewhere: what was pending is applied; the disks follow it on shared storage
        run = engine_tasks(dc, [{"name": "start", "virtplane.kvm.vm": dict(changed_web, host=["hv2"])}])
        assert run.rc == 0, run.output[-3000:]
        assert run["start"]["vm"]["host"] == "hv2" and run["start"]["vm"]["pending_restart"] == []
        # its list of disks is the whole list: the disk plugged by the disk module alone is detached, and kept
        assert [d["name"] for d in run["start"]["vm"]["disks"]] == ["web-data"]
        assert "detach from web" in run["start"]["actions"]
        assert os.path.exists(os.path.join(SHARED, "hot.qcow2"))
        assert "VIRTPLANE-GUEST-READY ip=192.168.100.33" in wait_for_console(
            console_of("hv2", "web"), "VIRTPLANE-GUEST-READY", timeout=90)

        # removed with its disks (force: it runs)
        run = engine_tasks(dc, [{"name": "remove", "virtplane.kvm.vm": {"vms": [
            {"name": "web", "state": "absent", "force": True}, {"name": "peer", "state": "absent", "force": True}]}},
            {"name": "hot", "virtplane.kvm.disk": {"name": "hot", "storage_domain": "shared", "state": "absent"}}])
        assert run.rc == 0, run.output[-3000:]
        assert "web: remove disk web-data" in run["remove"]["actions"]
        assert "web" not in domains_on("hv2") and "peer" not in domains_on("hv2")
        assert not os.path.exists(os.path.join(SHARED, "web-data.qcow2"))
        assert not os.path.exists(os.path.join(SHARED, "hot.qcow2"))
        assert sql_lab("SELECT name FROM vm") == [] and sql_lab("SELECT name FROM disk WHERE name IN"
                                                                " ('web-data', 'hot')") == []
    finally:
        engine_tasks(dc, [{"name": "cleanup", "ignore_errors": True, "virtplane.kvm.vm": {"vms": [
            {"name": n, "state": "absent", "force": True} for n in ("web", "peer", "clone1", "clone2")]}},
            {"name": "template", "ignore_errors": True, "virtplane.kvm.template": {"name": "tpl", "state": "absent"}},
            {"name": "hot", "ignore_errors": True, "virtplane.kvm.disk": {"name": "hot", "storage_domain": "shared",
                                                                          "state": "absent"}}])


def _pings(proc):
    """Stop a ping started with Popen: (sent, answered)."""
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=15)[0]
    found = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert found, out
    return int(found.group(1)), int(found.group(2))


def test_a_vm_migrates_there_and_back_answering_ping_and_stays_when_its_destination_dies(dc, sql_lab):
    """A guest on the VXLAN network with its disk on shared storage, pinged every 50 ms from hv2 while it goes to hv2
    and back: few replies lost, its heartbeat never starts again; then a migration whose destination's QEMU dies."""
    mover = lab_vm("mover", "192.168.100.41", "192.168.100.250", "hv1",
                   disks=[{"name": "mover-data", "storage_domain": "shared", "size": "64MiB"}])
    bridge = sql_lab("SELECT bridge FROM logical_network WHERE name = 'app'")[0]["bridge"]
    pinger_ns = "%s-hv2" % PREFIX
    ping = None
    try:
        for host in ("hv1", "hv2"):
            in_host(KEY, HOSTS[host], "rm -f /var/lib/virtplane/local/mover-console.log")
        run = engine_tasks(dc, [{"name": "start", "virtplane.kvm.vm": mover},
                                {"name": "unpin", "virtplane.kvm.vm": dict(mover, host=[])}])
        assert run.rc == 0, run.output[-3000:]
        assert run["start"]["vm"]["host"] == "hv1" and run["unpin"]["vm"]["pending_restart"] == []
        assert "VIRTPLANE-GUEST-READY" in wait_for_console(console_of("hv1", "mover"), "VIRTPLANE-GUEST-READY", 120)
        subprocess.run(["ip", "-n", pinger_ns, "addr", "add", "192.168.100.250/24", "dev", bridge], check=True)
        assert subprocess.run(["ip", "netns", "exec", pinger_ns, "ping", "-c", "3", "-W", "2", "192.168.100.41"],
                              capture_output=True, check=False).returncode == 0
        ping = subprocess.Popen(["ip", "netns", "exec", pinger_ns, "ping", "-n", "-i", "0.05", "-W", "1",
                                 "192.168.100.41"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1)

        run = engine_tasks(dc, [{"name": "check", "virtplane.kvm.vm_migrate": {"name": "mover", "host": "hv2"}}],
                           check=True, diff=True)
        assert run["check"]["changed"] and run["check"]["diff"] == {"before": {"host": "hv1"},
                                                                    "after": {"host": "hv2"}}
        assert "mover" in domains_on("hv1") and "mover" not in domains_on("hv2")
        assert sql_lab("SELECT * FROM migration") == []

        run = engine_tasks(dc, [{"name": "there", "virtplane.kvm.vm_migrate": {"name": "mover", "host": "hv2"}},
                                {"name": "back", "virtplane.kvm.vm_migrate": {"name": "mover"}}])
        assert run.rc == 0, run.output[-3000:]
        sent, answered = _pings(ping)
        ping = None
        there, back = run["there"]["vm"], run["back"]["vm"]
        assert (there["host"], back["host"]) == ("hv2", "hv1")  # back: the scheduler's choice, hv1 the only other
        assert there["migration"]["status"] == "done" and there["migration"]["downtime_ms"] is not None
        assert back["migration"]["source"] == "hv2" and back["uptime_s"] >= there["uptime_s"]
        # a few replies lost while the guest paused to switch hosts (about a tenth of a second each time)
        assert sent > 20 and sent - answered <= 20, (sent, answered)
        assert "mover" in domains_on("hv1") and "mover" not in domains_on("hv2")
        runtime = sql_lab("SELECT h.name AS host, r.status, r.migrating_to_host_id FROM vm_runtime r JOIN vm v"
                          " ON v.id = r.vm_id JOIN host h ON h.id = r.run_host_id WHERE v.name = 'mover'")
        assert runtime == [{"host": "hv1", "status": "Up", "migrating_to_host_id": None}]
        # the same guest all along: booted once, its heartbeat counting on across both hosts' console logs
        on_hv1, on_hv2 = read_console(console_of("hv1", "mover")), read_console(console_of("hv2", "mover"))
        assert on_hv1.count("VIRTPLANE-GUEST-READY") == 1 and "VIRTPLANE-GUEST-READY" not in on_hv2
        beats_hv1, beats_hv2 = heartbeats(on_hv1), heartbeats(on_hv2)
        assert beats_hv2 and beats_hv1 == sorted(set(beats_hv1)) and beats_hv2 == sorted(set(beats_hv2))
        # no count twice (a guest started again counts from 1), and it counted on on hv1 after hv2
        assert not set(beats_hv1) & set(beats_hv2) and beats_hv2[-1] < beats_hv1[-1], (on_hv1[:3000], on_hv2[:1000])
        assert [m["status"] for m in sql_lab("SELECT status FROM migration ORDER BY started_at")] == ["done", "done"]

        # a migration whose destination dies half-way: 1 MiB/s keeps it going while hv2's QEMU is killed
        moving = start_plays([{"hosts": "engine", "gather_facts": False, "tasks": [
            {"name": "slow", "ignore_errors": True, "virtplane.kvm.vm_migrate": {
                "name": "mover", "host": "hv2", "policy": "legacy", "bandwidth": 1}}]}],
            inventory=dc["inventory"], engine=dc["engine"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not sql_lab(
                "SELECT 1 FROM job WHERE action = 'vm.migrate' AND status = 'running' AND progress > 0"):
            time.sleep(0.5)
        assert sql_lab("SELECT status FROM vm_runtime r JOIN vm v ON v.id = r.vm_id WHERE v.name = 'mover'") == [
            {"status": "MigratingFrom"}]
        in_host(KEY, HOSTS["hv2"], "pkill -KILL -f 'guest=[m]over'")
        run = moving.wait(timeout=180)
        failure = run["slow"]
        assert failure.get("failed") and failure["msg"].startswith("Failed to migrate VM 'mover' to host hv2 on "
                                                                   "host hv1: "), failure
        runtime = sql_lab("SELECT h.name AS host, r.status, r.migrating_to_host_id, r.job_id FROM vm_runtime r"
                          " JOIN vm v ON v.id = r.vm_id JOIN host h ON h.id = r.run_host_id WHERE v.name = 'mover'")
        assert runtime == [{"host": "hv1", "status": "Up", "migrating_to_host_id": None, "job_id": None}]
        assert "mover" in domains_on("hv1") and "mover" not in domains_on("hv2")
        last = heartbeats(read_console(console_of("hv1", "mover")))[-1]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and heartbeats(read_console(console_of("hv1", "mover")))[-1] <= last:
            time.sleep(0.5)
        assert heartbeats(read_console(console_of("hv1", "mover")))[-1] > last  # it runs on
        failed = sql_lab("SELECT status, reason FROM migration ORDER BY started_at")[-1]
        assert failed["status"] == "failed" and failed["reason"], failed
        event = sql_lab("SELECT message FROM event WHERE code = 'VM_MIGRATION_FAILED'")[-1]["message"]
        assert "it keeps running on host hv1" in event, event
    finally:
        if ping is not None:
            ping.kill()
            ping.communicate()
        subprocess.run(["ip", "-n", pinger_ns, "addr", "del", "192.168.100.250/24", "dev", bridge], check=False,
                       capture_output=True)
        remove = {"name": "mover", "state": "absent", "force": True}
        run = engine_tasks(dc, [{"name": "remove", "virtplane.kvm.vm": remove}])
        assert run.rc == 0, run.output[-3000:]
    assert not os.path.exists(os.path.join(SHARED, "mover-data.qcow2"))


def test_a_guest_that_dirties_memory_faster_than_the_link_moves_only_under_post_copy(dc, sql_lab):
    """A guest that copies 32 MiB of random bytes over and over as fast as its vCPU goes, migrated over a link
    capped at 8 MiB/s: legacy pre-copy never catches up and is aborted at its time limit, the guest left running on
    its source; post_copy switches once pre-copy stops converging and completes, the same guest counting on."""
    dirty = lab_vm("dirty", "192.168.100.45", "192.168.100.254", "hv1", memory="256MiB")
    dirty["boot"]["cmdline"] += " vp.dirty=32"
    try:
        for host in ("hv1", "hv2"):
            in_host(KEY, HOSTS[host], "rm -f /var/lib/virtplane/local/dirty-console.log")
        run = engine_tasks(dc, [{"name": "start", "virtplane.kvm.vm": dirty},
                                {"name": "unpin", "virtplane.kvm.vm": dict(dirty, host=[])}])
        assert run.rc == 0, run.output[-3000:]
        console = wait_for_console(console_of("hv1", "dirty"), "VIRTPLANE-GUEST-DIRTY", 120)
        assert "VIRTPLANE-GUEST-DIRTY 32\n" in console, console[-2000:]
        move = {"name": "dirty", "host": "hv2", "bandwidth": 8}
        run = engine_tasks(dc, [
            {"name": "legacy", "ignore_errors": True, "virtplane.kvm.vm_migrate": dict(
                move, policy="legacy", migration_timeout=25)},
            {"name": "post_copy", "virtplane.kvm.vm_migrate": dict(move, policy="post_copy")}])
        assert run["legacy"].get("failed") and "not done within 25 s" in run["legacy"]["msg"], run["legacy"]
        moved = run["post_copy"]
        assert not moved.get("failed"), moved
        assert moved["vm"]["host"] == "hv2" and moved["vm"]["migration"]["postcopy"] is True, moved["vm"]
        migrations = sql_lab("SELECT policy, status, postcopy FROM migration WHERE vm_name = 'dirty'"
                             " ORDER BY started_at")
        assert migrations == [{"policy": "legacy", "status": "failed", "postcopy": False},
                              {"policy": "post_copy", "status": "done", "postcopy": True}], migrations
        assert "dirty" in domains_on("hv2") and "dirty" not in domains_on("hv1")
        before = heartbeats(read_console(console_of("hv1", "dirty")))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not heartbeats(read_console(console_of("hv2", "dirty"))):
            time.sleep(0.5)
        after = heartbeats(read_console(console_of("hv2", "dirty")))
        assert after and after[0] >= before[-1] > 1, (before[-3:], after[:3])  # the same guest, never restarted
    finally:
        remove = {"name": "dirty", "state": "absent", "force": True}
        run = engine_tasks(dc, [{"name": "remove", "virtplane.kvm.vm": remove}])
        assert run.rc == 0, run.output[-3000:]


def _image_snapshots(volume):
    """The internal snapshots in a qcow2 image of the shared domain, as qemu-img lists them (names)."""
    out = subprocess.run(["qemu-img", "snapshot", "-U", "-l", os.path.join(SHARED, volume)], capture_output=True,
                         text=True, check=True).stdout
    return sorted(line.split()[1] for line in out.splitlines()[2:] if line.strip())


def _boots(host, name, count):
    """Wait for the guest's boot count on its disk; True once it says ``count``."""
    text = "VIRTPLANE-GUEST-DISK vda boots=%d" % count
    return text in wait_for_console(console_of(host, name), text, timeout=90)


def test_snapshots_of_a_running_and_a_stopped_vm_are_reverted_to_and_deleted(dc, sql_lab):
    """The guest counts its boots on its disk and its heartbeats in memory: what a revert brings back shows."""
    import libvirt

    snap = {"name": "snap", "cluster": "lab", "memory": "128MiB", "vcpus": 1, "host": ["hv1"],
            "disks": [{"name": "snap-data", "storage_domain": "shared", "size": "64MiB"}],
            "boot": {"kernel": IMAGE + "/vmlinuz", "initrd": IMAGE + "/initrd.img",
                     "cmdline": "console=ttyS0 panic=-1 vp.bootcount=vda"}}

    def snapshot(task, name, refused=False, **options):
        return {"name": task, "ignore_errors": refused,
                "virtplane.kvm.snapshot": dict({"vm": "snap", "name": name}, **options)}

    def start():
        in_host(KEY, HOSTS["hv1"], "rm -f /var/lib/virtplane/local/snap-console.log")
        run = engine_tasks(dc, [{"name": "start", "virtplane.kvm.vm": dict(snap, state="running")}])
        assert run.rc == 0 and run["start"]["vm"]["host"] == "hv1", run.output[-3000:]

    def stop():
        run = engine_tasks(dc, [{"name": "stop", "virtplane.kvm.vm": {"name": "snap", "state": "stopped",
                                                                      "stop_timeout": 60}}])
        assert run.rc == 0, run.output[-3000:]

    def rows():
        return sql_lab("SELECT s.name, s.state, s.with_memory, s.vm_status, s.job_id FROM snapshot s"
                       " ORDER BY s.name")
    try:
        start()
        assert _boots("hv1", "snap", 1)

        # check mode: predicted, and nothing in the engine, libvirt or the image
        run = engine_tasks(dc, [snapshot("check", "running")], check=True)
        assert run.rc == 0, run.output[-3000:]
        assert run["check"]["changed"] and run["check"]["actions"] == ["take snapshot running on hv1, with its memory"]
        assert rows() == [] and _image_snapshots("snap-data.qcow2") == []

        # a running VM: with its memory (the only internal kind libvirt 9.0 takes of a running VM)
        run = engine_tasks(dc, [snapshot("take", "running", description="booted once"), snapshot("again", "running"),
                                snapshot("disk only", "nomem", refused=True, memory=False)])
        assert run["take"]["changed"] and not run["again"]["changed"], run.output[-3000:]
        taken = run["take"]["snapshot"]
        assert (taken["kind"], taken["memory"], taken["vm_status"], taken["state"]) == ("internal", True, "Up", "ok")
        assert taken["consistency"].startswith("the whole VM at one instant")
        assert "libvirt 9.0 takes an internal snapshot of a running VM only with its memory" in \
            run["disk only"]["msg"]
        assert rows() == [{"name": "running", "state": "ok", "with_memory": True, "vm_status": "Up", "job_id": None}]
        assert _image_snapshots("snap-data.qcow2") == ["running"]
        at_snapshot = max(heartbeats(read_console(console_of("hv1", "snap"))))

        # the guest counts on; reverted, it is back at the instant of the snapshot (QEMU restarted from it)
        time.sleep(8)
        before = read_console(console_of("hv1", "snap"))
        assert max(heartbeats(before)) >= at_snapshot + 5
        run = engine_tasks(dc, [snapshot("revert check", "running", state="reverted")], check=True)
        assert run["revert check"]["changed"] and read_console(console_of("hv1", "snap")).startswith(before[:200])
        run = engine_tasks(dc, [snapshot("revert", "running", state="reverted")])
        assert run.rc == 0, run.output[-3000:]
        assert run["revert"]["actions"] == ["revert VM snap to snapshot running on hv1 (memory and disks; the guest "
                                            "goes back to that instant)"]
        deadline, after = time.monotonic() + 30, []
        while time.monotonic() < deadline and len(after) < 2:
            now = read_console(console_of("hv1", "snap"))
            after = heartbeats(now[len(before):] if now.startswith(before) else now)
            time.sleep(1)
        assert after and after[0] <= at_snapshot + 3 < max(heartbeats(before)), (at_snapshot, before[-200:], after)
        assert sql_lab("SELECT r.status FROM vm_runtime r JOIN vm v ON v.id = r.vm_id WHERE v.name = 'snap'") == [
            {"status": "Up"}]
        # another one of the same QEMU run: libvirt makes it a child of the first; it is given back alone later
        run = engine_tasks(dc, [snapshot("second", "second")])
        assert run.rc == 0 and _image_snapshots("snap-data.qcow2") == ["running", "second"], run.output[-3000:]

        # a stopped VM: its disks. Booted twice (the reverted guest's disk said 1), then snapshotted stopped
        stop()
        start()
        assert _boots("hv1", "snap", 2)
        stop()
        run = engine_tasks(dc, [snapshot("memory of stopped", "stopped", refused=True, memory=True),
                                snapshot("stopped", "stopped")])
        assert "it is stopped: it has no memory to keep" in run["memory of stopped"]["msg"], run.output[-3000:]
        assert run["stopped"]["snapshot"]["memory"] is False and run["stopped"]["snapshot"]["vm_status"] == "Down"
        assert run["stopped"]["actions"] == ["take snapshot stopped of its disks on hv1"]
        assert _image_snapshots("snap-data.qcow2") == ["running", "second", "stopped"]
        start()
        assert _boots("hv1", "snap", 3)
        # a disk-only snapshot is not reverted under a running guest
        run = engine_tasks(dc, [snapshot("revert running", "stopped", refused=True, state="reverted")])
        assert "it holds the disks only, and the VM runs" in run["revert running"]["msg"], run.output[-3000:]
        stop()
        run = engine_tasks(dc, [snapshot("revert", "stopped", state="reverted")])
        assert run.rc == 0 and run["revert"]["actions"] == ["revert the disks of VM snap to snapshot stopped on hv1"]
        start()
        assert _boots("hv1", "snap", 3)  # the disk said 2 again: the boot after the snapshot is undone

        # listed; the disk that holds them is not removed under them
        run = engine_tasks(dc, [{"name": "list", "virtplane.kvm.snapshot_info": {"vm": ["snap"]}},
                                {"name": "grow", "ignore_errors": True, "virtplane.kvm.disk": {
                                    "name": "snap-data", "storage_domain": "shared", "size": "128MiB"}}])
        assert [(s["name"], s["memory"]) for s in run["list"]["snapshots"]] == [
            ("running", True), ("second", True), ("stopped", False)]
        assert "a revert would shrink it back" in run["grow"]["msg"], run.output[-3000:]

        # deleted: on the running domain (QEMU deletes it from the image), then with the VM stopped
        run = engine_tasks(dc, [snapshot("delete check", "stopped", state="absent")], check=True)
        assert run["delete check"]["changed"]
        assert _image_snapshots("snap-data.qcow2") == ["running", "second", "stopped"]
        run = engine_tasks(dc, [snapshot("delete", "stopped", state="absent"),
                                snapshot("again", "stopped", state="absent")])
        assert run["delete"]["changed"] and not run["again"]["changed"], run.output[-3000:]
        assert _image_snapshots("snap-data.qcow2") == ["running", "second"]
        stop()
        run = engine_tasks(dc, [snapshot("delete", "running", state="absent"),
                                snapshot("delete second", "second", state="absent")])
        assert run.rc == 0, run.output[-3000:]
        assert _image_snapshots("snap-data.qcow2") == [] and rows() == []
        # nothing of the domains defined for the stopped VM's snapshots is left on the host
        conn = libvirt.open("qemu+tcp://%s/system" % HOSTS["hv1"])
        try:
            assert [d.name() for d in conn.listAllDomains(0)] == []
        finally:
            conn.close()

        # a raw disk: refused with the reason, before anything changes
        run = engine_tasks(dc, [
            {"name": "raw", "virtplane.kvm.vm": dict(snap, name="rawvm", disks=[
                {"name": "rawvm-data", "storage_domain": "shared", "size": "16MiB", "format": "raw"}])},
            {"name": "refused", "ignore_errors": True, "virtplane.kvm.snapshot": {"vm": "rawvm", "name": "s"}}])
        assert "disk rawvm-data is raw" in run["refused"]["msg"] and "libvirt 9.0 cannot revert to an external " \
            "snapshot" in run["refused"]["msg"], run.output[-3000:]
        assert rows() == []
    finally:
        engine_tasks(dc, [{"name": "cleanup", "ignore_errors": True, "virtplane.kvm.vm": {"vms": [
            {"name": n, "state": "absent", "force": True} for n in ("snap", "rawvm")]}}])


def test_a_cluster_filled_to_its_capacity_refuses_the_next_vm_with_each_hosts_reason(dc, sql_lab):
    """Three lab hosts on this one machine: each schedules a third of it, less its own reserve. A VM that takes
    what is left on each host fills the cluster; the next one is refused, host by host, and starts once one
    of them is gone."""
    run = engine_tasks(dc, [{"name": "info", "virtplane.kvm.host_info": {"cluster": "lab"}}])
    hosts = {h["name"]: h for h in run["info"]["hosts"]}
    assert sorted(hosts) == ["hv1", "hv2"]
    # a third of this machine each, or less where libvirt inside the host reports less (the lesser counts)
    machine_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // MIB
    for host in hosts.values():
        assert host["schedulable_memory_mib"] == machine_mib // 3, host
        assert host["capacity"] == {"memory_mib": min(host["memory_mib"], machine_mib // 3) - 256,
                                    "cpus": max(1, os.cpu_count() // 3)}, host
    assert sum(h["capacity"]["memory_mib"] for h in hosts.values()) < machine_mib

    def filler(host):
        committed = sql_lab("SELECT COALESCE(sum(r.reserved_memory_mib), 0) AS mib FROM vm_runtime r"
                            " JOIN host h ON h.id = r.run_host_id WHERE h.name = %s", host)[0]["mib"]
        return {"name": "fill-" + host, "cluster": "lab", "vcpus": 1, "host": [host],
                "memory": "%dMiB" % (hosts[host]["capacity"]["memory_mib"] - committed),
                "boot": {"kernel": IMAGE + "/vmlinuz", "initrd": IMAGE + "/initrd.img",
                         "cmdline": "console=ttyS0 panic=-1"}, "state": "running"}

    fillers = [filler(h) for h in sorted(hosts)]
    one_more = {"name": "one-more", "cluster": "lab", "memory": "128MiB", "vcpus": 1,
                "boot": {"kernel": IMAGE + "/vmlinuz", "initrd": IMAGE + "/initrd.img", "cmdline": "console=ttyS0"},
                "state": "running"}
    try:
        run = engine_tasks(dc, [
            {"name": "fill", "virtplane.kvm.vm": {"vms": fillers}},
            {"name": "define", "virtplane.kvm.vm": dict(one_more, state="stopped")},
            {"name": "dry run", "virtplane.kvm.vm_placement_info": {"name": "one-more"}},
            {"name": "one more", "ignore_errors": True, "virtplane.kvm.vm": one_more}])
        assert run["fill"]["changed"], run.output[-3000:]
        assert {v["name"]: (v["status"], v["host"]) for v in run["fill"]["vms"]} == {
            "fill-hv1": ("Up", "hv1"), "fill-hv2": ("Up", "hv2")}
        assert set(domains_on("hv1")) >= {"fill-hv1"} and set(domains_on("hv2")) >= {"fill-hv2"}
        full = "memory %s of %s GiB committed, 0.1 GiB more does not fit"
        gib = ("%.1f" % (hosts["hv1"]["capacity"]["memory_mib"] / 1024)).rstrip("0").rstrip(".")
        message = run["one more"]["msg"]
        assert message == ("Cannot start VM 'one-more': no host of cluster lab can run it: hv1: %s; hv2: %s"
                           % (full % (gib, gib), full % (gib, gib))), message
        assert [(h["name"], h["verdict"], h["reason"]) for h in run["dry run"]["placement"]["hosts"]] == [
            ("hv1", "rejected", full % (gib, gib)), ("hv2", "rejected", full % (gib, gib))]
        assert sql_lab("SELECT r.status FROM vm v JOIN vm_runtime r ON r.vm_id = v.id WHERE v.name = 'one-more'") \
            == [{"status": "Down"}]

        run = engine_tasks(dc, [{"name": "gone", "virtplane.kvm.vm": {"name": "fill-hv2", "state": "absent",
                                                                      "force": True}},
                                {"name": "one more", "virtplane.kvm.vm": one_more}])
        assert run.rc == 0, run.output[-3000:]
        assert run["one more"]["vm"]["host"] == "hv2"
    finally:
        cleanup = engine_tasks(dc, [{"name": "cleanup", "virtplane.kvm.vm": {"vms": [
            {"name": n, "state": "absent", "force": True} for n in ("fill-hv1", "fill-hv2", "one-more")]}}])
        assert cleanup.rc == 0, cleanup.output[-3000:]


def test_the_clusters_cpu_model_is_one_the_lab_hosts_can_give_or_the_vm_is_refused(dc, sql_lab):
    """The lab's hosts run guests under TCG: libvirt lists Westmere as usable there, Skylake-Client not. A cluster
    of the one is refused on every host with that reason; of the other, the VM's domain gets exactly it."""
    import libvirt

    run = engine_tasks(dc, [{"name": "info", "virtplane.kvm.host_info": {"cluster": "lab"}}])
    for host in run["info"]["hosts"]:
        assert "Westmere" in host["cpu_models"] and "Skylake-Client" not in host["cpu_models"], host["cpu_models"]
    guest = {"name": "cpu1", "cluster": "lab", "memory": "128MiB", "vcpus": 1, "state": "running",
             "boot": {"kernel": IMAGE + "/vmlinuz", "initrd": IMAGE + "/initrd.img", "cmdline": "console=ttyS0"}}
    model = {"name": "lab", "datacenter": "lab"}
    try:
        run = engine_tasks(dc, [
            {"name": "skylake", "virtplane.kvm.cluster": dict(model, cpu_model="Skylake-Client")},
            {"name": "refused", "ignore_errors": True, "virtplane.kvm.vm": guest}])
        reason = "its CPU cannot give guests the cluster's CPU model Skylake-Client"
        assert run["refused"]["msg"] == ("Cannot start VM 'cpu1': no host of cluster lab can run it: hv1: %s; "
                                         "hv2: %s" % (reason, reason)), run.output[-3000:]
        run = engine_tasks(dc, [
            {"name": "westmere", "virtplane.kvm.cluster": dict(model, cpu_model="Westmere")},
            {"name": "started", "virtplane.kvm.vm": guest}])
        assert run.rc == 0, run.output[-3000:]
        started = run["started"]["vm"]
        conn = libvirt.open("qemu+tcp://%s/system" % HOSTS[started["host"]])
        try:
            cpu = ET.fromstring(conn.lookupByName("cpu1").XMLDesc(0)).find("cpu")
        finally:
            conn.close()
        assert (cpu.get("mode"), cpu.findtext("model"), cpu.find("model").get("fallback")) == (
            "custom", "Westmere", "forbid")
    finally:
        cleanup = engine_tasks(dc, [{"name": "cleanup", "virtplane.kvm.vm": {"name": "cpu1", "state": "absent",
                                                                             "force": True}}])
        assert cleanup.rc == 0, cleanup.output[-3000:]
        # the module sets a model, it never clears one: the other tests of this lab run with none
        sql_lab("UPDATE cluster SET cpu_model = NULL WHERE name = 'lab' RETURNING id")


def test_a_vlan_network_the_kernel_cannot_carry_makes_hosts_nonoperational_until_removed(dc, sql_lab):
    vlan = {"name": "tagged", "datacenter": "lab", "vlan": 42, "clusters": [{"name": "lab"}]}
    run = engine_tasks(dc, [{"name": "vlan", "virtplane.kvm.logical_network": vlan}])
    assert run.rc == 0, run.output[-3000:]
    hosts = sql_lab("SELECT name, status, status_reason FROM host ORDER BY name")
    assert [(h["name"], h["status"]) for h in hosts] == [("hv1", "NonOperational"), ("hv2", "NonOperational")]
    assert "required network tagged is not realized" in hosts[0]["status_reason"]
    assert "no 802.1Q VLAN support" in hosts[0]["status_reason"]
    assert run["vlan"]["logical_network"]["status"] == "missing"

    run = engine_tasks(dc, [{"name": "remove", "virtplane.kvm.logical_network": {"name": "tagged",
                                                                                 "state": "absent"}}])
    assert run.rc == 0, run.output[-3000:]
    assert {h["status"] for h in sql_lab("SELECT status FROM host")} == {"Up"}
    events = sql_lab("SELECT message FROM event WHERE code = 'HOST_STATUS_CHANGED' ORDER BY id")
    assert any("NonOperational" in e["message"] for e in events) and events[-1]["message"].endswith("is Up")


def _importer(dc, name, source):
    return start_plays([{"hosts": "engine", "gather_facts": False, "tasks": [disk(name, source=str(source))]}],
                       inventory=dc["inventory"], engine=dc["engine"])


def _wait_for_event(sql_lab, code, name, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = sql_lab("SELECT id FROM event WHERE code = %s AND object_name = %s", code, name)
        if rows:
            return rows[0]["id"]
        time.sleep(0.2)
    raise AssertionError("no %s event for %s within %d s" % (code, name, timeout))


def _volumes(prefix):
    return sorted(f for f in os.listdir(SHARED) if f.startswith(prefix))


def test_an_import_holds_up_no_other_disk_of_its_data_center(dc, sql_lab, tmp_path):
    """The import streams with no lock held: another disk is made while it runs, in the same data center."""
    big = tmp_path / "big.img"
    with open(big, "wb") as handle:
        handle.truncate(3 * 1024 ** 3)
    importer = _importer(dc, "big", big)
    try:
        started = _wait_for_event(sql_lab, "DISK_IMPORT_STARTED", "big")
        run = engine_tasks(dc, [disk("small", size="64MiB")])
        assert run["small"]["changed"], run.output[-3000:]
        finished = importer.wait(timeout=600)
    except BaseException:
        importer.kill()
        raise
    assert finished.rc == 0, finished.output[-3000:]
    order = sql_lab("SELECT code, object_name FROM event WHERE object_name IN ('big', 'small') AND code IN"
                    " ('DISK_IMPORT_STARTED', 'DISK_CREATED') AND id >= %s ORDER BY id", started)
    assert [(e["code"], e["object_name"]) for e in order] == [
        ("DISK_IMPORT_STARTED", "big"), ("DISK_CREATED", "small"), ("DISK_CREATED", "big")]
    job = sql_lab("SELECT status, progress FROM job WHERE action = 'disk.create' AND object_name = 'big'")
    assert job == [{"status": "finished", "progress": 100}]
    cleanup = engine_tasks(dc, [disk("big", state="absent"), disk("small", state="absent")])
    assert cleanup.rc == 0, cleanup.output[-3000:]


def test_an_import_killed_half_way_is_rolled_back_by_the_next_run(dc, sql_lab, tmp_path):
    """SIGKILL mid-import: a locked row and a half-filled volume; after the lease the next run rolls both back."""
    big = tmp_path / "big.img"
    with open(big, "wb") as handle:
        handle.truncate(3 * 1024 ** 3)
    importer = _importer(dc, "victim", big)
    try:
        _wait_for_event(sql_lab, "DISK_IMPORT_STARTED", "victim")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not sql_lab(
                "SELECT 1 FROM job WHERE object_name = 'victim' AND progress > 0 AND status = 'running'"):
            time.sleep(0.1)
    finally:
        importer.kill()
    # what the dead run left: its reservation, its row and a volume, half filled
    assert sql_lab("SELECT status FROM disk WHERE name = 'victim'") == [{"status": "locked"}]
    assert sql_lab("SELECT status FROM job WHERE object_name = 'victim'") == [{"status": "running"}]
    assert _volumes("victim") == ["victim.img"]
    time.sleep(6)  # the lease (5 s) runs out: the reservation belongs to a run that died
    small = tmp_path / "small.img"
    with open(small, "wb") as handle:
        handle.write(b"\0" * MIB)
    run = engine_tasks(dc, [disk("victim", source=str(small))])
    assert run["victim"]["changed"], run.output[-3000:]
    recovered = sql_lab("SELECT message FROM event WHERE code = 'JOB_RECOVERED' AND object_name = 'victim'")
    assert len(recovered) == 1 and "rolled back" in recovered[0]["message"], recovered
    # once the next run has passed: one row, one volume, both of the new import
    victim = sql_lab("SELECT status, size_bytes FROM disk WHERE name = 'victim'")
    assert victim == [{"status": "ok", "size_bytes": MIB}]
    assert _volumes("victim") == ["victim.img"] and os.path.getsize(os.path.join(SHARED, "victim.img")) == MIB
    assert [r["status"] for r in sql_lab("SELECT status FROM job WHERE object_name = 'victim' ORDER BY started_at")] \
        == ["aborted", "finished"]
    cleanup = engine_tasks(dc, [disk("victim", state="absent")])
    assert cleanup.rc == 0, cleanup.output[-3000:]


def test_an_unchanged_apply_opens_one_read_only_connection_per_host(dc, sql_lab):
    """Re-applying what is already there reads each host once, read-only, and changes nothing."""
    from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _db
    from ansible_collections.virtplane.kvm.plugins.module_utils.services import _network, _storage

    uris = sorted(r["libvirt_uri"] for r in sql_lab("SELECT libvirt_uri FROM host WHERE status = 'Up'"))
    events = len(sql_lab("SELECT id FROM event"))
    jobs = len(sql_lab("SELECT id FROM job"))
    for service, spec in (
            (_storage, _storage.StorageDomainSpec.from_params({"name": "shared", "datacenter": "lab",
                                                               "type": "posixfs", "posixfs": {"path": SHARED}})),
            (_network, _network.NetworkSpec.from_params({"name": "app", "datacenter": "lab", "vxlan": 100,
                                                         "subnet": "192.168.100.0/24",
                                                         "clusters": [{"name": "lab"}]}))):
        engine = _db.connect(dc["engine"])
        try:
            outcome = service.ensure(engine, spec)
            assert not outcome.changed, outcome.actions
            assert sorted(engine.hypervisors.opened) == [(uri, True) for uri in uris]
        finally:
            engine.close()
    assert len(sql_lab("SELECT id FROM event")) == events  # no event
    assert len(sql_lab("SELECT id FROM job")) == jobs  # and no reservation: nothing was to be done


def test_a_host_that_joins_later_gets_the_domains_and_networks(dc, sql_lab):
    run = run_plays([{"name": "hv3", "hosts": "later", "gather_facts": False, "roles": ["virtplane.kvm.hypervisor"]}],
                    inventory=dc["inventory"], engine=dc["engine"])
    assert run.rc == 0, run.output[-4000:]
    run = engine_tasks(dc, [{"name": "domains", "virtplane.kvm.storage_domain_info": {"refresh": True}},
                            {"name": "networks", "virtplane.kvm.logical_network_info": {}}])
    domains = {d["name"]: d for d in run["domains"]["storage_domains"]}
    for name in ("shared", "san"):
        assert domains[name]["status"] == "active", domains[name]
        assert [h["host"] for h in domains[name]["hosts"] if h["active"]] == ["hv1", "hv2", "hv3"]
    network = run["networks"]["logical_networks"][0]
    assert network["status"] == "realized" and [h["host"] for h in network["hosts"]] == ["hv1", "hv2", "hv3"]
    assert sql_lab("SELECT status FROM host WHERE name = 'hv3'")[0]["status"] == "Up"
    host_pools, host_networks = pools("hv3")
    assert host_pools["vp-shared"] and host_pools["vp-san"] and host_networks["vp-app"]


MAINTENANCE_TASKS = """
- name: The engine has this host in maintenance, with no VM on it
  virtplane.kvm.vm_info:
    host: "{{ inventory_hostname }}"
  delegate_to: "{{ maintenance_engine }}"
  register: on_host

- name: The host's status as the engine has it
  virtplane.kvm.host_info:
    name: ["{{ inventory_hostname }}"]
  delegate_to: "{{ maintenance_engine }}"
  register: seen

- name: Recorded on the host
  ansible.builtin.copy:
    dest: /root/maintained
    content: "{{ seen.hosts[0].status }} with {{ on_host.vms | length }} VMs\\n"
    mode: "0644"

- name: A failure, where asked
  ansible.builtin.fail:
    msg: the maintenance of {{ inventory_hostname }} failed
  when: inventory_hostname in (fail_on | default([]))
"""


def _where_vms_run(names, sql_lab):
    """{VM: host} as the engine has it, checked against the hosts' libvirt: each runs on that host alone."""
    recorded = {r["name"]: r["host"] for r in sql_lab(
        "SELECT v.name, h.name AS host FROM vm v JOIN vm_runtime r ON r.vm_id = v.id JOIN host h"
        " ON h.id = r.run_host_id WHERE v.name = ANY(%s) AND r.status = 'Up'", list(names))}
    running = {h: domains_on(h) for h in HOSTS}
    for name in names:
        assert [h for h in HOSTS if name in running[h]] == [recorded.get(name)], (name, recorded, running)
    return recorded


def test_a_host_with_three_vms_is_drained_and_the_maintenance_playbook_rolls_over_three_hosts(
        dc, sql_lab, tmp_path):
    """hv1 runs three VMs (one HA) and is drained: HA first, each guest keeps counting on its new host. Then the
    rolling maintenance playbook over hv1, hv2, hv3: its tasks fail on hv2, which stays in maintenance and stops
    the run; run again, it finishes, every host Up again and the VMs running where the engine says."""
    names = ("d1", "d2", "d3")
    vms = [lab_vm(name, "192.168.100.%d" % (51 + n), "192.168.100.254", "hv1") for n, name in enumerate(names)]
    vms[2]["ha"] = {"enabled": True, "priority": 50}
    try:
        for host in HOSTS:
            in_host(KEY, HOSTS[host], "rm -f /var/lib/virtplane/local/d?-console.log /root/maintained")
        # they start pinned to hv1, then may go anywhere
        run = engine_tasks(dc, [{"name": "start", "virtplane.kvm.vm": {"vms": vms}},
                                {"name": "unpin", "virtplane.kvm.vm": {"vms": [dict(v, host=[]) for v in vms]}}])
        assert run.rc == 0, run.output[-3000:]
        for name in names:
            assert "VIRTPLANE-GUEST-READY" in wait_for_console(console_of("hv1", name), "VIRTPLANE-GUEST-READY", 120)
        assert set(_where_vms_run(names, sql_lab).values()) == {"hv1"}

        drain = {"name": "drain", "virtplane.kvm.host": {"name": "hv1", "state": "maintenance"}}
        run = engine_tasks(dc, [drain], check=True)
        planned = run["drain"]["actions"]
        assert [a.split()[2] for a in planned[:3]] == ["d3", "d1", "d2"], planned  # HA first, then by name
        assert planned[3] == "status Up -> Maintenance" and run["drain"]["host"]["status"] == "Maintenance"
        assert sql_lab("SELECT status FROM host WHERE name = 'hv1'") == [{"status": "Up"}]
        run = engine_tasks(dc, [drain, dict(drain, name="again")])
        assert run.rc == 0, run.output[-3000:]
        assert run["drain"]["host"]["status"] == "Maintenance" and not run["again"]["changed"]
        where = _where_vms_run(names, sql_lab)
        assert set(where.values()) <= {"hv2", "hv3"}, where
        assert run["drain"]["actions"] == ["migrate VM %s to %s" % (n, where[n]) for n in ("d3", "d1", "d2")] + \
            ["status Up -> Maintenance"]
        # two at a time (the cluster's migration_max_parallel), the HA VM among the first two
        started = [m["vm_name"] for m in sql_lab("SELECT vm_name FROM migration ORDER BY started_at")[-3:]]
        assert "d3" in started[:2], started
        for name in names:  # the same guests: they count on where they went, never from 1 again
            before = heartbeats(read_console(console_of("hv1", name)))
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not heartbeats(read_console(console_of(where[name], name))):
                time.sleep(0.5)
            after = heartbeats(read_console(console_of(where[name], name)))
            assert after and after[0] >= before[-1] > 1, (name, before[-3:], after[:3])

        # the playbook: its tasks see each host in maintenance with nothing on it; they fail on hv2
        tasks = tmp_path / "maintenance-tasks.yml"
        tasks.write_text(MAINTENANCE_TASKS)
        env = {"VIRTPLANE_ENGINE_%s" % k.upper(): str(v) for k, v in dc["engine"].items()}
        playbook = [{"import_playbook": os.path.join(ROOT, "playbooks", "maintenance.yml")}]
        run = run_plays(playbook, inventory=dc["inventory"], extra_env=env,
                        extra_vars={"maintenance_tasks": str(tasks), "fail_on": ["hv2"]})
        assert run.rc != 0 and "the maintenance of hv2 failed" in run.output, run.output[-3000:]
        status = {r["name"]: r["status"] for r in sql_lab("SELECT name, status FROM host")}
        assert status == {"hv1": "Up", "hv2": "Maintenance", "hv3": "Up"}, status
        assert "hv2" not in _where_vms_run(names, sql_lab).values()
        assert not os.path.exists(host_file(STATE_DIR, "hv3", "/root/maintained"))  # the run stopped at hv2

        run = run_plays(playbook, inventory=dc["inventory"], extra_env=env,
                        extra_vars={"maintenance_tasks": str(tasks)})
        assert run.rc == 0, run.output[-3000:]
        for host in HOSTS:
            with open(host_file(STATE_DIR, host, "/root/maintained")) as handle:
                assert handle.read() == "Maintenance with 0 VMs\n", host
        status = {r["name"]: r["status"] for r in sql_lab("SELECT name, status FROM host")}
        assert status == {"hv1": "Up", "hv2": "Up", "hv3": "Up"}, status
        where = _where_vms_run(names, sql_lab)
        assert "hv3" not in where.values(), where  # the last host drained
        for name in names:
            last = heartbeats(read_console(console_of(where[name], name)))[-1]
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and heartbeats(read_console(console_of(where[name], name)))[-1] <= last:
                time.sleep(0.5)
            assert heartbeats(read_console(console_of(where[name], name)))[-1] > last  # it runs on
    finally:
        run = engine_tasks(dc, [{"name": "remove", "virtplane.kvm.vm": {"vms": [
            {"name": n, "state": "absent", "force": True} for n in names]}},
            {"name": "active", "loop": sorted(HOSTS), "virtplane.kvm.host": {"name": "{{ item }}", "state": "active"}}])
        assert run.rc == 0, run.output[-3000:]


def _power():
    """The lab's power controller, as a host's fence agent."""
    with open(os.path.join(STATE_DIR, "power.secret")) as handle:
        return {"agent": "lab", "address": "10.83.0.1", "password": handle.read().strip()}


def _lab_pid(host):
    with open(os.path.join(STATE_DIR, "lab.json")) as handle:
        return next(h["pid"] for h in json.load(handle)["hosts"] if h["name"] == host)


def _openers(path):
    """The processes (of every lab host: they share this machine's kernel) that hold ``path`` open. Seen from here, a
    lab host's file is under its root (``<state dir>/hosts/<host>/root/<path>``)."""
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir("/proc/%s/fd" % pid)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink("/proc/%s/fd/%s" % (pid, fd)).endswith(path):
                    found.add(int(pid))
            except OSError:
                continue
    return found


def _runtime(sql_lab, names):
    return {r["name"]: r for r in sql_lab(
        "SELECT v.name, r.status, r.status_reason, h.name AS host FROM vm v JOIN vm_runtime r ON r.vm_id = v.id"
        " LEFT JOIN host h ON h.id = r.run_host_id WHERE v.name = ANY(%s)", list(names))}


def _answers(namespace, address):
    return subprocess.run(["ip", "netns", "exec", namespace, "ping", "-c", "1", "-W", "1", address],
                          capture_output=True, check=False).returncode == 0


@pytest.fixture(scope="module")
def monitors(dc, tmp_path_factory):
    """Two monitor services of the lab's engine (on this machine, as the engine role would run them on two engine
    hosts): one active, the other standing by."""
    logs = tmp_path_factory.mktemp("monitors")
    procs = [start_monitor(dc["engine"], logs, name, "--interval", "1", "--grace", "2", "--lease-ttl", "5")
             for name in ("first", "second")]
    yield {"procs": procs, "logs": logs}
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _ha_vm(name, address, host, priority=None, peer="192.168.100.250"):
    spec = lab_vm(name, address, peer, host, disks=[{"name": name + "-data", "storage_domain": "shared",
                                                     "size": "16MiB"}])
    if priority is not None:
        spec["ha"] = {"enabled": True, "priority": priority}
    return spec


def test_a_host_whose_libvirtd_stopped_is_soft_fenced_over_ssh_and_comes_back(dc, sql_lab, monitors):
    """hv2's fence agent is ssh: once its libvirtd stops, the monitor restarts it over SSH (a soft fence) and hv2
    is Up again, its status changes and the soft fence recorded as events."""
    # a host with no VM: there is nothing to restart, but its libvirtd is brought back all the same
    assert sql_lab("SELECT v.name FROM vm_runtime r JOIN vm v ON v.id = r.vm_id JOIN host h ON h.id = r.run_host_id"
                   " WHERE h.name = 'hv2'") == []
    fence = {"agent": "ssh", "address": HOSTS["hv2"], "options": {"identity_file": KEY}}
    run = engine_tasks(dc, [{"name": "ssh", "virtplane.kvm.host": {"name": "hv2", "fence": fence}}])
    assert run.rc == 0, run.output[-3000:]
    since = sql_lab("SELECT clock_timestamp() AS t")[0]["t"]
    service = "if [ -d /run/systemd/system ]; then systemctl %s libvirtd; else /usr/local/sbin/virtplane-service %s " \
        "libvirtd; fi"
    try:
        in_host(KEY, HOSTS["hv2"], service % ("stop", "stop"))
        [soft] = until(lambda: sql_lab("SELECT message FROM event WHERE code = 'HOST_SOFT_FENCED' AND"
                                       " host_name = 'hv2' AND occurred_at > %s", since), 60, "hv2 soft-fenced")
        assert soft["message"] == "Host hv2: libvirtd restarted over SSH (soft fence)"
        until(lambda: sql_lab("SELECT 1 FROM host WHERE name = 'hv2' AND status = 'Up'"), 30, "hv2 Up again")
        changes = [r["message"].split(":")[0] for r in sql_lab(
            "SELECT message FROM event WHERE code = 'HOST_STATUS_CHANGED' AND host_name = 'hv2' AND occurred_at > %s"
            " ORDER BY occurred_at, id", since)]
        assert changes == ["Host hv2 is Connecting", "Host hv2 is NonResponsive", "Host hv2 is Up"], changes
    finally:
        in_host(KEY, HOSTS["hv2"], service % ("start", "start"), check=False)
        engine_tasks(dc, [{"name": "none", "virtplane.kvm.host": {"name": "hv2", "fence": {"agent": "none"}}}])


def test_a_host_cut_off_from_the_engine_is_not_presumed_dead_until_fenced(dc, sql_lab, monitors):
    """hv2, with no fence agent, loses the engine's network while its HA VM runs on: NonResponsive, and every try
    to start the VM elsewhere is refused by the lock manager (hv2 holds its disk's lease), so it never runs twice;
    fenced by hand, hv2 is powered off and the VM restarts on another host and answers ping."""
    spec = _ha_vm("cut", "192.168.100.71", "hv2", priority=1)
    image = os.path.join(SHARED, "cut-data.qcow2")
    bridge = sql_lab("SELECT bridge FROM logical_network WHERE name = 'app'")[0]["bridge"]
    pinger = "%s-hv3" % PREFIX
    try:
        in_host(KEY, HOSTS["hv2"], "rm -f /var/lib/virtplane/local/cut-console.log")
        run = engine_tasks(dc, [{"name": "start", "virtplane.kvm.vm": spec},
                                {"name": "unpin", "virtplane.kvm.vm": dict(spec, host=[])},
                                {"name": "no fencing", "virtplane.kvm.host": {"name": "hv2",
                                                                              "fence": {"agent": "none"}}}])
        assert run.rc == 0, run.output[-3000:]
        wait_for_console(console_of("hv2", "cut"), "VIRTPLANE-GUEST-READY", 120)
        subprocess.run(["ip", "-n", pinger, "addr", "add", "192.168.100.250/24", "dev", bridge], check=True)
        until(lambda: _answers(pinger, "192.168.100.71"), 30, "cut answers ping")
        qemu = _openers(image)
        assert len(qemu) == 1

        # the engine's network goes; the VXLAN segment (eth1) stays, so the guest keeps answering its peers
        subprocess.run(["ip", "-n", "%s-hv2" % PREFIX, "link", "set", "eth0", "down"], check=True)
        until(lambda: sql_lab("SELECT 1 FROM host WHERE name = 'hv2' AND status = 'NonResponsive'"), 40,
              "hv2 NonResponsive")
        refused = until(lambda: sql_lab("SELECT message FROM event WHERE code = 'VM_HA_RESTART_FAILED' AND"
                                        " vm_name = 'cut'")[1:], 60, "two refused restarts")
        assert all("lock" in r["message"].lower() or "busy" in r["message"].lower() for r in refused), refused
        assert _openers(image) == qemu and _answers(pinger, "192.168.100.71")  # the one guest, running on
        assert [r["host"] for r in sql_lab("SELECT host_name AS host FROM event WHERE code = 'VM_HA_RESTARTED'"
                                           " AND vm_name = 'cut'")] == []
        unproven = sql_lab("SELECT message FROM event WHERE code = 'HA_LEASE_WAIT' AND host_name = 'hv2'")
        assert unproven, "the wait for hv2's leases is reported"

        # fenced by hand: the lab's power controller kills hv2, its leases go with it, the VM starts elsewhere
        run = engine_tasks(dc, [{"name": "agent", "virtplane.kvm.host": {"name": "hv2", "fence": _power()}},
                                {"name": "fence", "virtplane.kvm.host": {"name": "hv2", "state": "fenced"}}])
        assert run.rc == 0, run.output[-3000:]
        assert _power()["password"] not in run.output

        def restarted():
            row = _runtime(sql_lab, ["cut"])["cut"]
            return row["status"] == "Up" and row["host"] != "hv2" and row
        moved = until(restarted, 90, "cut restarted elsewhere")
        wait_for_console(console_of(moved["host"], "cut"), "VIRTPLANE-GUEST-READY", 120)
        until(lambda: _answers(pinger, "192.168.100.71"), 30, "cut answers ping on %s" % moved["host"])
        assert len(_openers(image)) == 1 and _openers(image) != qemu
    finally:
        subprocess.run(["ip", "-n", pinger, "addr", "del", "192.168.100.250/24", "dev", bridge], check=False,
                       capture_output=True)


def test_a_dead_hosts_ha_vms_answer_ping_elsewhere_while_the_standby_monitor_takes_over(dc, sql_lab, monitors):
    """hv1 runs two HA VMs and one that is not; the active monitor is killed, then hv1 (its QEMU, libvirtd, sshd:
    every process of the host). The standby takes over, fences hv1 through the lab's power controller and the
    HA VMs restart on hv3, the higher priority first, and answer ping; the other VM is Down with the reason; no
    disk is ever opened by two QEMUs."""
    vms = [_ha_vm("ha1", "192.168.100.72", "hv1", priority=10), _ha_vm("ha2", "192.168.100.73", "hv1", priority=5),
           _ha_vm("plain", "192.168.100.74", "hv1")]
    names = [v["name"] for v in vms]
    images = {n: os.path.join(SHARED, "%s-data.qcow2" % n) for n in names}
    bridge = sql_lab("SELECT bridge FROM logical_network WHERE name = 'app'")[0]["bridge"]
    pinger = "%s-hv3" % PREFIX
    try:
        for name in names:
            in_host(KEY, HOSTS["hv1"], "rm -f /var/lib/virtplane/local/%s-console.log" % name)
        run = engine_tasks(dc, [{"name": "start", "virtplane.kvm.vm": {"vms": vms}},
                                {"name": "unpin", "virtplane.kvm.vm": {"vms": [dict(v, host=[]) for v in vms]}},
                                {"name": "fencing", "loop": ["hv1", "hv3"],
                                 "virtplane.kvm.host": {"name": "{{ item }}", "fence": _power()}}])
        assert run.rc == 0, run.output[-3000:]
        for name in names:
            wait_for_console(console_of("hv1", name), "VIRTPLANE-GUEST-READY", 120)
        subprocess.run(["ip", "-n", pinger, "addr", "add", "192.168.100.250/24", "dev", bridge], check=True)
        for address in ("192.168.100.72", "192.168.100.73", "192.168.100.74"):
            until(lambda address=address: _answers(pinger, address), 30, "%s answers ping" % address)

        holder = sql_lab("SELECT holder, epoch FROM monitor_lease")[0]
        active = next(p for p in monitors["procs"] if holder["holder"].split(":")[1] == str(p.pid))
        active.kill()
        active.wait()
        os.kill(_lab_pid("hv1"), signal.SIGKILL)  # hv1 dies: PID 1 of its PID namespace, and all of it with it
        killed = time.monotonic()

        def restarted():
            found = _runtime(sql_lab, ["ha1", "ha2"])
            return all(r["status"] == "Up" and r["host"] == "hv3" for r in found.values()) and found
        until(restarted, 120, "ha1 and ha2 Up on hv3")
        for name, address in (("ha1", "192.168.100.72"), ("ha2", "192.168.100.73")):
            until(lambda address=address: _answers(pinger, address), 60, "%s answers ping on hv3" % name)
        took = time.monotonic() - killed
        plain = _runtime(sql_lab, ["plain"])["plain"]
        assert (plain["status"], plain["host"]) == ("Down", None)
        assert plain["status_reason"] == "host hv1 was fenced (powered off by its lab agent)"
        lease = sql_lab("SELECT holder, epoch FROM monitor_lease")[0]
        assert lease["holder"] != holder["holder"] and lease["epoch"] > holder["epoch"], (holder, lease)
        assert [r["vm_name"] for r in sql_lab("SELECT vm_name FROM event WHERE code = 'VM_HA_RESTARTED' AND"
                                              " vm_name IN ('ha1', 'ha2') ORDER BY occurred_at, id")] == ["ha1", "ha2"]
        for name in ("ha1", "ha2"):
            assert len(_openers(images[name])) == 1, name
        assert _openers(images["plain"]) == set()
        fenced = sql_lab("SELECT message FROM event WHERE code = 'HOST_FENCED' AND host_name = 'hv1'")
        assert len(fenced) == 1 and "by the monitor" in fenced[0]["message"], fenced
        print("failover: HA VMs answered ping on hv3 %.1f s after hv1 died" % took)
    finally:
        subprocess.run(["ip", "-n", pinger, "addr", "del", "192.168.100.250/24", "dev", bridge], check=False,
                       capture_output=True)


@pytest.fixture(scope="module")
def sql_lab(engine_options_module):
    from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _db

    engine = _db.connect(engine_options_module)

    def query(statement, *args):
        with engine.transaction() as cur:
            cur.execute(statement, args)
            return cur.fetchall() if cur.description else []

    query.engine = engine
    yield query
    engine.close()
