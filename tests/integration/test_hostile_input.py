"""Hostile and careless input against every module: refused with one line naming the field, in check
mode as in a real run, before anything changes; nothing the user did not type reaches results, events
or the database.

Each class of the hardening: URIs that read files or point elsewhere, credentials in URIs, names with
a trailing newline (a ``$``-anchored check passes them, PostgreSQL does not), numbers that make no
sense, and database errors that would quote whole rows.
"""

import json
import sys

import pytest

from tests.support.playbook import run_play, start_plays

SECRET = "TOPSECRET-4f1c"
BASE = [{"name": "dc", "virtplane.kvm.datacenter": {"name": "paris"}},
        {"name": "prod", "virtplane.kvm.cluster": {"name": "prod", "datacenter": "paris"}},
        {"name": "hv1", "virtplane.kvm.host": {"name": "hv1", "cluster": "prod", "libvirt_uri": "test:///default"}},
        {"name": "shared", "virtplane.kvm.storage_domain": {
            "name": "shared", "datacenter": "paris", "type": "posixfs", "posixfs": {"path": "/srv/shared"}}},
        {"name": "blue", "virtplane.kvm.logical_network": {"name": "blue", "datacenter": "paris", "mode": "isolated"}}]
TABLES = ("datacenter", "cluster", "host", "storage_domain", "storage_domain_cluster", "storage_domain_host",
          "logical_network", "cluster_network", "host_network", "disk", "vm", "vm_nic", "vm_runtime", "job",
          "template", "snapshot", "affinity_group", "event", "engine_setting")

DC = "virtplane.kvm.datacenter"
CLUSTER = "virtplane.kvm.cluster"
HOST = "virtplane.kvm.host"
SD = "virtplane.kvm.storage_domain"
DISK = "virtplane.kvm.disk"
NET = "virtplane.kvm.logical_network"
VM = "virtplane.kvm.vm"
TEMPLATE = "virtplane.kvm.template"
SNAPSHOT = "virtplane.kvm.snapshot"


def _sd(**options):
    kind = options.get("type", "posixfs")
    defaults = {"name": "sd2", "datacenter": "paris", "type": "posixfs"}
    if kind == "posixfs":
        defaults["posixfs"] = {"path": "/srv/two"}
    return dict(defaults, **options)


def _disk(**options):
    return dict({"name": "d1", "storage_domain": "shared", "size": "1GiB"}, **options)


def _net(**options):
    return dict({"name": "green", "datacenter": "paris"}, **options)


# (task, module, options, field the message must name, what it must say)
CASES = [
    # 1. URIs that make libvirt read files or talk to something else than the host's libvirtd
    ("uri etc shadow", HOST, {"name": "hv2", "cluster": "prod", "libvirt_uri": "test:///etc/shadow"},
     "libvirt_uri", "node XML file"),
    ("uri socket", HOST, {"name": "hv2", "cluster": "prod", "libvirt_uri": "qemu:///system?socket=/etc/shadow"},
     "libvirt_uri", "query parameter 'socket'"),
    ("repoint socket", HOST, {"name": "hv1", "libvirt_uri": "qemu:///system?socket=/etc/shadow"},
     "libvirt_uri", "query parameter 'socket'"),
    ("uri ssh command", HOST, {"name": "hv2", "cluster": "prod", "libvirt_uri": "qemu+ssh://hv9/system?command=/bin/sh"},
     "libvirt_uri", "query parameter 'command'"),
    ("uri remote name", HOST, {"name": "hv2", "cluster": "prod",
                               "libvirt_uri": "qemu+ssh://hv9/system?name=test:///etc/passwd"},
     "libvirt_uri", "query parameter 'name'"),
    # 2. credentials
    ("uri password", HOST, {"name": "hv2", "cluster": "prod", "libvirt_uri": "qemu+tcp://admin:%s@hv9/system" % SECRET},
     "libvirt_uri", "carries a password"),
    ("repoint password", HOST, {"name": "hv1", "libvirt_uri": "qemu+ssh://root:%s@hv9/system" % SECRET},
     "libvirt_uri", "carries a password"),
    # 3. a trailing newline (and its relatives) in every name and identifier
    ("dc name", DC, {"name": "paris\n"}, "name", "is not a valid name"),
    ("dc description nul", DC, {"name": "rome", "description": "a\x00b"}, "description", "control characters"),
    ("cluster name", CLUSTER, {"name": "prod2\n", "datacenter": "paris"}, "name", "is not a valid name"),
    ("cluster dc", CLUSTER, {"name": "prod2", "datacenter": "paris\n"}, "datacenter", "is not a valid name"),
    ("cluster cpu model", CLUSTER, {"name": "prod", "cpu_model": "Skylake\n"}, "cpu_model", "CPU model"),
    ("host name", HOST, {"name": "hv2\n", "cluster": "prod", "libvirt_uri": "test:///default"}, "name", "valid name"),
    ("host cluster", HOST, {"name": "hv2", "cluster": "prod\n", "libvirt_uri": "test:///default"}, "cluster",
     "valid name"),
    ("host nic", HOST, {"name": "hv1", "network_nic": "eth1\n"}, "network_nic", "network interface name"),
    ("host address", HOST, {"name": "hv1", "address": "hv1.example.com\n"}, "address", "host name or an IP"),
    ("host uri newline", HOST, {"name": "hv1", "libvirt_uri": "test:///default\n"}, "libvirt_uri",
     "control characters"),
    ("sd name", SD, _sd(name="sd2\n"), "name", "valid name"),
    ("sd cluster", SD, _sd(clusters=["prod\n"]), "clusters", "valid name"),
    ("sd path", SD, _sd(posixfs={"path": "/srv/two\n"}), "posixfs.path", "not allowed in a path"),
    ("sd vg", SD, _sd(type="logical", logical={"volume_group": "vg0\n"}), "logical.volume_group",
     "volume group"),
    ("sd secret uuid", SD, _sd(type="rbd", rbd={"monitors": ["mon1"], "pool": "vms", "user": "u",
                                                "secret_uuid": "2ec115d7-3a88-3ceb-bc12-0ac909a6fd87\n"}),
     "rbd.secret_uuid", "UUID of a libvirt secret"),
    ("sd iqn", SD, _sd(type="iscsi", iscsi={"portal": "192.0.2.1", "target": "iqn.2026-11.com.x:t\n"}),
     "iscsi.target", "not allowed"),
    ("sd description", SD, _sd(description="x\x1b[2J"), "description", "control characters"),
    ("disk name", DISK, _disk(name="d1\n"), "name", "valid name"),
    ("disk domain", DISK, _disk(storage_domain="shared\n"), "storage_domain", "valid name"),
    ("disk vm", DISK, _disk(vm="web01\n"), "vm", "valid name"),
    ("disk source", DISK, _disk(size=None, source="/dev/zero"), "source", "in the system's own /dev"),
    ("disk source etc", DISK, _disk(size=None, source="/etc/shadow"), "source", "in the system's own /etc"),
    ("disk source variable", DISK, _disk(size=None, source="/srv/$HOME/x.img"), "source", "not allowed in a path"),
    ("disk tiny", DISK, _disk(size="513"), "size", "at least 1 MiB"),
    ("net name", NET, _net(name="green\n"), "name", "valid name"),
    ("net bridge", NET, _net(bridge="vpgreen\n"), "bridge", "bridge name"),
    ("net cluster", NET, _net(clusters=[{"name": "prod\n"}]), "clusters.name", "valid name"),
    ("net description", NET, _net(description="\x00"), "description", "control characters"),
    ("net subnet", NET, _net(subnet="10.1.0.0/24\n\n"), "subnet", "CIDR"),
    # 4. numbers that make no sense
    ("host timeout negative", HOST, {"name": "hv1", "timeout": -1}, "timeout", "outside 1-3600"),
    ("host timeout huge", HOST, {"name": "hv1", "timeout": 10 ** 20}, "timeout", "outside 1-3600"),
    ("host wait timeout", HOST, {"name": "hv1", "wait_timeout": -1}, "wait_timeout", "outside 0-3600"),
    ("host reserved memory negative", HOST, {"name": "hv1", "reserved_memory": "-256MiB"}, "reserved_memory",
     "not an amount of memory"),
    ("host reserved memory huge", HOST, {"name": "hv1", "reserved_memory": "9" * 25}, "reserved_memory",
     "more than 1 PiB"),
    ("host reserved memory fraction", HOST, {"name": "hv1", "reserved_memory": "1.5MiB"}, "reserved_memory",
     "not a whole number of MiB"),
    ("host reserved memory newline", HOST, {"name": "hv1", "reserved_memory": "256MiB\n"}, "reserved_memory",
     "not an amount of memory"),
    ("host schedulable memory metachar", HOST, {"name": "hv1", "schedulable_memory": "2GiB;reboot"},
     "schedulable_memory", "not an amount of memory"),
    ("host reserved cpus negative", HOST, {"name": "hv1", "reserved_cpus": -1}, "reserved_cpus", "outside 0-65536"),
    ("host schedulable cpus huge", HOST, {"name": "hv1", "schedulable_cpus": 10 ** 20}, "schedulable_cpus",
     "outside 0-65536"),
    ("sd timeout", SD, _sd(timeout=-5), "timeout", "outside 1-3600"),
    ("disk fraction", DISK, _disk(size="1.9"), "size", "not a whole number of bytes"),
    ("disk huge", DISK, _disk(size="9" * 25), "size", "more than the 1 PiB"),
    ("disk lun negative", DISK, {"name": "d1", "storage_domain": "shared", "lun": -1}, "lun", "outside 0-16383"),
    ("disk lun huge", DISK, {"name": "d1", "storage_domain": "shared", "lun": 10 ** 12}, "lun", "outside 0-16383"),
    ("disk timeout", DISK, _disk(timeout=0), "timeout", "outside 1-3600"),
    ("net vlan huge", NET, _net(vlan=10 ** 20), "vlan", "not a usable VLAN id"),
    ("net vxlan negative", NET, _net(vxlan=-1), "vxlan", "VXLAN network identifier"),
    ("net mtu huge", NET, _net(mtu=10 ** 12), "mtu", "outside 68-9216"),
    ("net timeout", NET, _net(timeout=-1), "timeout", "outside 1-3600"),
    ("cluster percent huge", CLUSTER, {"name": "prod", "memory_overcommit_percent": 10 ** 20},
     "memory_overcommit_percent", "outside 100-400"),
    ("cluster bandwidth negative", CLUSTER, {"name": "prod", "migration_bandwidth_mbps": -1},
     "migration_bandwidth_mbps", "outside 1-1000000"),
    ("cluster ratio huge", CLUSTER, {"name": "prod", "cpu_overcommit_ratio": 1e308}, "cpu_overcommit_ratio",
     "outside 1-64"),
    ("engine port", DC, {"name": "paris", "engine": {"port": 10 ** 6}}, "engine.port", "outside 1-65535"),
    ("engine timeout", DC, {"name": "paris", "engine": {"connect_timeout": -1}}, "engine.connect_timeout",
     "outside 1-300"),
    ("engine database", DC, {"name": "paris", "engine": {"database": "virtplane\n"}}, "engine.database",
     "PostgreSQL name"),
    ("engine CA relative", DC, {"name": "paris", "engine": {"sslrootcert": "cacert.pem"}}, "engine.sslrootcert",
     "not an absolute path"),
    ("engine CA newline", DC, {"name": "paris", "engine": {"sslrootcert": "/etc/virtplane/pki/cacert.pem\n"}},
     "engine.sslrootcert", "not an absolute path"),
    ("engine CA dots", DC, {"name": "paris", "engine": {"sslrootcert": "/etc/virtplane/../shadow"}},
     "engine.sslrootcert", "not an absolute path"),
]
# found by trying harder: values Ansible itself converts or expands, and values that are well formed
# but point where they should not
CASES += [
    ("path variable", SD, _sd(posixfs={"path": "/srv/${VIRTPLANE_ENGINE_PASSWORD}"}), "posixfs.path",
     "not allowed in a path"),
    ("path home", SD, _sd(posixfs={"path": "~"}), "posixfs.path", "not allowed in a path"),
    ("path root", SD, _sd(posixfs={"path": "/"}), "posixfs.path", "system's own /"),
    ("path etc", SD, _sd(posixfs={"path": "/etc"}), "posixfs.path", "system's own /etc"),
    ("path double slash", SD, _sd(posixfs={"path": "//srv/x"}), "posixfs.path", "normalized"),
    ("uri password space", HOST, {"name": "hv2", "cluster": "prod", "libvirt_uri": "qemu+tcp://admin:%s x@h/system"
                                  % SECRET}, "libvirt_uri", "control characters"),
    ("uri password slash", HOST, {"name": "hv2", "cluster": "prod", "libvirt_uri": "qemu+tcp://admin:%s/x@h/system"
                                  % SECRET}, "libvirt_uri", ""),
    ("uri query password", HOST, {"name": "hv2", "cluster": "prod",
                                  "libvirt_uri": "qemu+tls://h/system?password=%s" % SECRET}, "libvirt_uri",
     "query parameter 'password'"),
    ("uri known hosts", HOST, {"name": "hv2", "cluster": "prod",
                               "libvirt_uri": "qemu+ssh://hv9/system?known_hosts=/etc/shadow&no_verify=1"},
     "libvirt_uri", "invalid value for query parameter 'known_hosts'"),
    ("uri pkipath proc", HOST, {"name": "hv2", "cluster": "prod",
                                "libvirt_uri": "qemu+tls://hv9/system?pkipath=/proc/self"},
     "libvirt_uri", "invalid value for query parameter 'pkipath'"),
    ("uri upper case", HOST, {"name": "hv2", "cluster": "prod", "libvirt_uri": "QEMU+TCP://hv9/system"},
     "libvirt_uri", "lower case"),
    ("uri numeric host", HOST, {"name": "hv2", "cluster": "prod", "libvirt_uri": "qemu+tcp://127.1/system"},
     "libvirt_uri", "names no valid host"),
    ("int newline", HOST, {"name": "hv1", "timeout": "15\n"}, "timeout", "not a whole number written in digits"),
    ("int arabic", NET, _net(vlan="\u0661\u0665"), "vlan", "not a whole number written in digits"),
    ("int exponent", NET, _net(vlan="1e3"), "vlan", "not a whole number written in digits"),
    ("int infinity", NET, _net(mtu="Infinity"), "mtu", "not a whole number written in digits"),
    ("engine port arabic", DC, {"name": "paris", "engine": {"port": "\u0665\u0664\u0663\u0662"}}, "engine.port",
     "not a whole number"),
    ("float bool", CLUSTER, {"name": "prod", "cpu_overcommit_ratio": True}, "cpu_overcommit_ratio",
     "not a number written in digits"),
    ("name bool", DC, {"name": True}, "name", "not text"),
    ("description list", DC, {"name": "paris", "description": ["x", "y"]}, "description", "not text"),
    ("choice newline", DC, {"name": "paris", "state": "absent\n"}, "state", "is not one of present, absent"),
    ("choice newline nested", HOST, {"name": "hv1", "domain_type": "kvm\n"}, "domain_type", "is not one of"),
    ("portal port", SD, _sd(type="iscsi", iscsi={"portal": "192.0.2.1:99999", "target": "iqn.2026-11.com.x:t"}),
     "iscsi.portal", "outside 1-65535"),
    ("iqn month", SD, _sd(type="iscsi", iscsi={"portal": "192.0.2.1", "target": "iqn.2026-99.com.x:t"}),
     "iscsi.target", "iSCSI qualified name"),
    ("vg dots", SD, _sd(type="logical", logical={"volume_group": ".."}), "logical.volume_group", "volume group"),
    ("vg device", SD, _sd(type="logical", logical={"volume_group": "vg0", "devices": ["/etc/passwd"]}),
     "logical.devices", "not a block device"),
    ("rbd pool", SD, _sd(type="rbd", rbd={"monitors": ["mon1"], "pool": "a/b@c=d,e:f"}), "rbd.pool",
     "Ceph pool name"),
    ("nic dash", HOST, {"name": "hv1", "network_nic": "-h"}, "network_nic", "network interface name"),
    ("nic word", HOST, {"name": "hv1", "network_nic": "help"}, "network_nic", "word of iproute2"),
    ("bridge word", NET, _net(bridge="help"), "bridge", "bridge name"),
    ("address hex", HOST, {"name": "hv1", "address": "0x7f000001"}, "address", "host name or an IP"),
    ("address zeros", HOST, {"name": "hv1", "address": "01.02.03.04"}, "address", "host name or an IP"),
    ("subnet everything", NET, _net(mode="nat", subnet="0.0.0.0/0", gateway="0.0.0.1"), "subnet", "wider than"),
    ("subnet no prefix", NET, _net(subnet="10.9.9.9"), "subnet", "CIDR notation"),
    ("subnet zero prefix", NET, _net(subnet="10.0.0.0/08"), "subnet", "CIDR notation"),
    ("subnet loopback", NET, _net(subnet="127.0.0.0/8"), "subnet", "loopback"),
    ("description bidi", DC, {"name": "rome", "description": "abc\u202edef"}, "description", "control characters"),
    ("description c1", DC, {"name": "rome", "description": "abc\x9bdef"}, "description", "control characters"),
    ("policy key newline", CLUSTER, {"name": "prod", "scheduling_policy_params": {"high_utilization\n": 70}},
     "scheduling_policy_params", "not a parameter"),
    ("vm name newline", VM, {"name": "web01\n", "cluster": "prod", "memory": "1GiB"}, "name", "valid name"),
    ("vm name xml", VM, {"name": "<web/>", "cluster": "prod", "memory": "1GiB"}, "name", "valid name"),
    ("vm memory huge", VM, {"name": "web01", "cluster": "prod", "memory": "9" * 30}, "memory", "1 PiB"),
    ("vm memory negative", VM, {"name": "web01", "cluster": "prod", "memory": "-512MiB"}, "memory", "not a size"),
    ("vm vcpus huge", VM, {"name": "web01", "cluster": "prod", "memory": "1GiB", "vcpus": 10 ** 20}, "vcpus",
     "outside 1-512"),
    ("vm vcpus newline", VM, {"name": "web01", "cluster": "prod", "memory": "1GiB", "vcpus": "2\n"}, "vcpus",
     "whole number"),
    ("vm kernel path", VM, {"name": "web01", "cluster": "prod", "memory": "1GiB", "boot": {"kernel": "/k;reboot"}},
     "boot.kernel", "not allowed"),
    ("vm cmdline newline", VM, {"name": "web01", "cluster": "prod", "memory": "1GiB",
                                "boot": {"kernel": "/k", "cmdline": "a\n"}}, "boot.cmdline", "one line"),
    ("vm state newline", VM, {"name": "web01", "state": "running\n"}, "state", "not one of"),
    ("vm bulk name", VM, {"vms": [{"name": "ok"}, {"name": "a b"}]}, "vms[1].name", "valid name"),
    ("vm template name", VM, {"name": "web01", "cluster": "prod", "memory": "1GiB", "template": "../t"}, "template",
     "valid name"),
    ("vm clone mode", VM, {"name": "web01", "cluster": "prod", "memory": "1GiB", "clone": "thin\n"}, "clone",
     "not one of"),
    ("template name", TEMPLATE, {"name": "t;reboot", "vm": "web01", "storage_domain": "shared"}, "name",
     "valid name"),
    ("template domain", TEMPLATE, {"name": "t1", "vm": "web01", "storage_domain": "shared\n"}, "storage_domain",
     "valid name"),
    ("snapshot name", SNAPSHOT, {"vm": "web01", "name": "s1</name><x>"}, "name", "valid name"),
    ("snapshot vm", SNAPSHOT, {"vm": "../web01", "name": "s1"}, "vm", "valid name"),
    ("snapshot name newline", SNAPSHOT, {"vm": "web01", "name": "s1\n", "state": "absent"}, "name", "valid name"),
    ("snapshot description", SNAPSHOT, {"vm": "web01", "name": "s1", "description": "a\x1b[2J"}, "description",
     "control character"),
    ("snapshot state", SNAPSHOT, {"vm": "web01", "name": "s1", "state": "reverted\n"}, "state", "not one of"),
    ("snapshot timeout", SNAPSHOT, {"vm": "web01", "name": "s1", "timeout": -1}, "timeout", "outside 1-3600"),
    ("affinity name", "virtplane.kvm.affinity_group", {"name": "g'; DROP TABLE vm;--", "cluster": "prod"}, "name",
     "valid name"),
    ("affinity vm", "virtplane.kvm.affinity_group", {"name": "g", "cluster": "prod", "vms": ["a\n"]}, "vms[0]",
     "valid name"),
    ("affinity priority", "virtplane.kvm.affinity_group", {"name": "g", "cluster": "prod", "priority": -5},
     "priority", "outside 1-100"),
    ("affinity priority huge", "virtplane.kvm.affinity_group", {"name": "g", "cluster": "prod", "priority": 10 ** 20},
     "priority", "outside 1-100"),
]
# read-only modules: refused the same way, and never as a "refused change"
INFO_CASES = [
    ("host_info name", "virtplane.kvm.host_info", {"name": ["hv1\n"]}, "name", "valid name"),
    ("sd_info timeout", "virtplane.kvm.storage_domain_info", {"timeout": 0}, "timeout", "outside 1-3600"),
    ("sd_info name", "virtplane.kvm.storage_domain_info", {"name": ["shared\n"]}, "name", "valid name"),
    ("disk_info name", "virtplane.kvm.disk_info", {"name": ["d1\n"]}, "name", "valid name"),
    ("net_info name", "virtplane.kvm.logical_network_info", {"name": ["blue\n"]}, "name", "valid name"),
    ("event limit huge", "virtplane.kvm.event_info", {"limit": 10 ** 20}, "limit", "outside 1-10000"),
    ("event limit zero", "virtplane.kvm.event_info", {"limit": 0}, "limit", "outside 1-10000"),
    ("event since", "virtplane.kvm.event_info", {"since": "2026-01-01\n"}, "since", "ISO 8601"),
    ("event name", "virtplane.kvm.event_info", {"object_name": "hv1\n"}, "object_name", "valid name"),
    ("vm_info name", "virtplane.kvm.vm_info", {"name": ["web01\n"]}, "name[0]", "valid name"),
    ("vm_info tag", "virtplane.kvm.vm_info", {"tags": ["$(reboot)"]}, "tags[0]", "valid name"),
    ("snapshot_info vm", "virtplane.kvm.snapshot_info", {"vm": ["web01;id"]}, "vm[0]", "valid name"),
    ("snapshot_info name", "virtplane.kvm.snapshot_info", {"name": ["s1\n"]}, "name[0]", "valid name"),
    ("placement name", "virtplane.kvm.vm_placement_info", {"name": "../web01"}, "name", "valid name"),
    ("balance cluster", "virtplane.kvm.cluster_balance_info", {"cluster": "prod\n"}, "cluster", "valid name"),
    ("balance params", "virtplane.kvm.cluster_balance_info",
     {"cluster": "prod", "policy_params": {"high_utilization": 10 ** 20}}, "policy_params.high_utilization",
     "outside 1-100"),
    ("balance param name", "virtplane.kvm.cluster_balance_info",
     {"cluster": "prod", "policy_params": {"high_utilization;": 10}}, "policy_params", "not a parameter"),
]


def _tasks(cases):
    return [{"name": name, "ignore_errors": True, module: options} for name, module, options, _f, _c in cases]


def _snapshot(sql):
    return {table: json.dumps(sql("SELECT * FROM %s ORDER BY 1" % table), default=str, sort_keys=True)
            for table in TABLES}


def test_every_class_is_refused_before_anything_changes_in_check_mode_as_for_real(engine_options, sql):
    assert run_play(BASE, engine=engine_options).rc == 0
    before = _snapshot(sql)
    cases = CASES + INFO_CASES
    # both at once (each is refused before it changes anything, so neither sees the other)
    play = {"hosts": "localhost", "connection": "local", "gather_facts": False,
            "vars": {"ansible_python_interpreter": sys.executable}}
    started = [start_plays([dict(play, tasks=_tasks(cases))], engine=engine_options, check=check)
               for check in (True, False)]
    check, real = (run.wait() for run in started)
    for name, _module, _options, field, cause in cases:
        for run in (check, real):
            result = run[name]
            assert result.get("failed"), "%s was accepted: %s" % (name, result)
            msg = result["msg"]
            assert "'%s'" % field in msg and cause in msg, "%s: %s" % (name, msg)
            assert "\x1b" not in msg and "\u202e" not in msg and "\x9b" not in msg, msg
            assert "\n" not in msg, "%s: message of several lines: %r" % (name, msg)
            assert "refused the change" not in msg and "Failing row" not in msg, msg
        assert check[name]["msg"] == real[name]["msg"], name
    # nothing changed: no row, no event, no setting
    assert _snapshot(sql) == before
    for run in (check, real):
        assert SECRET not in run.output  # not in messages, and not in the invocation Ansible prints
        assert SECRET not in json.dumps(run.results)


def test_a_uri_never_makes_the_engine_show_a_file(engine_options, sql, tmp_path):
    """The test driver reads any XML file it is pointed at; what the file holds never comes back."""
    node = tmp_path / "node.xml"
    node.write_text("<node><cpu><mhz>2400</mhz></cpu></node>")
    secret = tmp_path / "secret.xml"
    secret.write_text("password=%s\n<notxml %s>\n" % (SECRET, SECRET))
    assert run_play(BASE[:2] + [{"name": "hv2", HOST: {"name": "hv2", "cluster": "prod",
                                                       "libvirt_uri": "test://%s" % node}}],
                    engine=engine_options).rc == 0
    run = run_play([
        {"name": "register", "ignore_errors": True,
         HOST: {"name": "hv3", "cluster": "prod", "libvirt_uri": "test://%s" % secret}},
        {"name": "repoint", "ignore_errors": True, HOST: {"name": "hv2", "libvirt_uri": "test://%s" % secret}},
    ], engine=engine_options)
    assert run["register"]["msg"] == ("Cannot register host 'hv3': cannot connect to libvirt at test://%s: the test "
                                      "driver cannot read a node XML document there" % secret)
    # a URI that does not answer is not taken for a registered host either: it keeps the one it has
    assert run["repoint"]["msg"].startswith("Cannot update host 'hv2': cannot connect to libvirt at test://%s"
                                            % secret)
    assert run["repoint"]["msg"].endswith("it keeps libvirt URI test://%s" % node)
    assert sql("SELECT libvirt_uri FROM host WHERE name = 'hv2'") == [{"libvirt_uri": "test://%s" % node}]

    # the host's own node file turns into something else: the status reason and the event say so, no more
    node.write_text(secret.read_text())
    run = run_play([{"name": "check", HOST: {"name": "hv2"}},
                    {"name": "refresh", HOST: {"name": "hv2", "state": "refreshed"}}], engine=engine_options)
    assert run["check"]["host"]["status"] == "NonResponsive"
    assert SECRET not in run.output and SECRET not in json.dumps(run.results)
    assert SECRET not in json.dumps(sql("SELECT * FROM host"), default=str)
    assert SECRET not in json.dumps(sql("SELECT * FROM event"), default=str)


def test_an_engine_allows_the_test_driver_only_when_its_installer_says_so(production_engine_options):
    from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _db

    run = run_play(BASE[:2] + [
        {"name": "check", "ignore_errors": True, "check_mode": True,
         HOST: {"name": "hv1", "cluster": "prod", "libvirt_uri": "test:///default"}},
        {"name": "register", "ignore_errors": True,
         HOST: {"name": "hv1", "cluster": "prod", "libvirt_uri": "test:///default"}},
    ], engine=production_engine_options)
    for task in ("check", "register"):
        assert run[task]["msg"] == (
            "Invalid value for 'libvirt_uri': 'test:///default' uses libvirt's test driver: the test driver simulates "
            "a host for trials and tests; this engine does not allow it (virtplane.kvm.engine_database "
            "allow_test_driver)")
    engine = _db.connect(production_engine_options)
    try:
        assert not engine.allow_test_driver
        with engine.transaction() as cur:
            cur.execute("SELECT count(*) AS n FROM host")
            assert cur.fetchone()["n"] == 0
    finally:
        engine.close()


def test_database_refusals_name_the_field_and_the_database_never_the_row(engine_options, engine, sql):
    """A refusal Python did not foresee (here a rule added to the database) is still one clear line."""
    assert run_play(BASE[:2], engine=engine_options).rc == 0
    with engine.transaction() as cur:
        cur.execute("ALTER TABLE cluster ADD CONSTRAINT cluster_description_check CHECK (description <> 'forbidden')")
        cur.execute("ALTER TABLE event RENAME COLUMN details TO details_renamed")
    run = run_play([
        {"name": "update", "ignore_errors": True, CLUSTER: {"name": "prod", "description": "forbidden"}},
        {"name": "read", "ignore_errors": True, "virtplane.kvm.event_info": {}},
    ], engine=engine_options)
    assert run["update"]["msg"] == (
        "The engine database '%s' as 'virtplane' at %s refused the change: description: the value is not accepted "
        "(constraint cluster_description_check of cluster)" % (engine_options["database"], engine_options["host"]))
    assert "Failing row" not in run.output and "forbidden)" not in run["update"]["msg"]
    assert run["read"]["msg"].startswith("Failed to read from the engine database '%s'" % engine_options["database"])
    assert "refused the change" not in run["read"]["msg"] and "\n" not in run["read"]["msg"]
    assert sql("SELECT description FROM cluster") == [{"description": ""}]


@pytest.mark.parametrize("statement, field", [
    ("INSERT INTO datacenter (name) VALUES (E'x\\n')", "name"),
    ("INSERT INTO datacenter (name, storage_type) VALUES ('x', 'nope')", "storage_type"),
    ("INSERT INTO datacenter (name, description) VALUES ('x', NULL)", "description"),
])
def test_describe_error_gives_the_field_not_the_row(engine, statement, field):
    from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _db

    with pytest.raises(_db.DatabaseError) as refused:
        with engine.transaction() as cur:
            cur.execute(statement)
    described = _db.describe_error(refused.value)
    assert described.startswith(field + ":"), described
    assert "\n" not in described and "Failing row" not in described and "nope" not in described
