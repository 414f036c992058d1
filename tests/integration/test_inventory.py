"""The virtplane.kvm.engine inventory plugin on a real engine database: VMs grouped by cluster, host, tag and
status, constructed groups and variables, hosts on request, caching, and its refusals."""

import json
import os
import subprocess
import sys

import yaml

from tests.support.playbook import BIN, COLLECTIONS, ROOT, run_play

# kept as it is by ansible-playbook, for the engine to hold; run if anything templated it afterwards
RAW_LOOKUP = "{%% raw %%}{{ lookup('ansible.builtin.pipe', 'touch %s') }}{%% endraw %%}"


def setup(marker):
    """The engine's objects; a VM's description names a command that would touch `marker` if it were templated."""
    return [{"name": "dc", "virtplane.kvm.datacenter": {"name": "paris"}},
            {"name": "prod", "virtplane.kvm.cluster": {"name": "prod", "datacenter": "paris"}},
            {"name": "dev", "virtplane.kvm.cluster": {"name": "dev", "datacenter": "paris"}},
            {"name": "hv1", "virtplane.kvm.host": {"name": "hv1", "cluster": "prod", "libvirt_uri": "test:///default"}},
            {"name": "hv2", "virtplane.kvm.host": {"name": "hv2", "cluster": "dev", "libvirt_uri": "test:///default"}},
            {"name": "vms", "virtplane.kvm.vm": {"vms": [
                {"name": "web01", "cluster": "prod", "memory": "64MiB", "tags": ["web", "frontend"], "state": "running",
                 "description": RAW_LOOKUP % marker,
                 "console": {"type": "vnc", "password": "s3cret"}},
                {"name": "db01", "cluster": "prod", "memory": "128MiB", "vcpus": 2, "tags": ["db"]},
                {"name": "dev01", "cluster": "dev", "memory": "64MiB"}]}}]


def inventory(tmp_path, engine_options, name="vms.virtplane.yml", **config):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(dict({"plugin": "virtplane.kvm.engine", "engine": engine_options}, **config)))
    return str(path)


ENV = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
           ANSIBLE_INVENTORY_ENABLED="virtplane.kvm.engine", ANSIBLE_INVENTORY_UNPARSED_FAILED="true",
           ANSIBLE_NOCOLOR="1", ANSIBLE_PYTHON_INTERPRETER=sys.executable)


def ansible_inventory(path, *args, env=None):
    environment = dict(ENV, **(env or {}))
    return subprocess.run([os.path.join(BIN, "ansible-inventory"), "-i", path, *args], env=environment, cwd=ROOT,
                          capture_output=True, text=True, check=False)


def plain(value):
    """ansible-inventory writes each string from an inventory source as {"__ansible_unsafe": value}: data that is
    never templated, which is what values from the engine database must be."""
    if isinstance(value, dict):
        if list(value) == ["__ansible_unsafe"]:
            return value["__ansible_unsafe"]
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def listed(path, *args, env=None):
    out = ansible_inventory(path, "--list", *args, env=env)
    assert out.returncode == 0, out.stderr
    data = plain(json.loads(out.stdout))
    return data, {g: sorted(v.get("hosts", [])) for g, v in data.items() if g != "_meta"}


def test_vms_are_grouped_by_cluster_host_tag_and_status_with_constructed_groups(engine_options, tmp_path):
    run = run_play(setup(tmp_path / "templated"), engine=engine_options)
    assert run.rc == 0, run.output[-2000:]
    path = inventory(tmp_path, engine_options,
                     keyed_groups=[{"key": "virtplane_vm.vcpus | string", "prefix": "vcpus"}],
                     groups={"big": "virtplane_vm.memory_mib >= 128"},
                     compose={"ansible_user": "'cloud'", "vm_cluster": "virtplane_vm.cluster"})
    data, groups = listed(path)
    assert groups["virtplane_vms"] == ["db01", "dev01", "web01"]
    assert groups["cluster_prod"] == ["db01", "web01"] and groups["cluster_dev"] == ["dev01"]
    assert groups["host_hv1"] == ["web01"]
    assert groups["status_up"] == ["web01"] and groups["status_down"] == ["db01", "dev01"]
    assert groups["tag_web"] == groups["tag_frontend"] == ["web01"] and groups["tag_db"] == ["db01"]
    assert groups["vcpus_2"] == ["db01"] and groups["vcpus_1"] == ["dev01", "web01"]
    assert groups["big"] == ["db01"]
    web = data["_meta"]["hostvars"]["web01"]
    assert web["ansible_user"] == "cloud" and web["vm_cluster"] == "prod"
    # how its console is reached (its host's libvirt URI); the console connection itself only when asked for
    assert (web["ansible_virtplane_libvirt_uri"], web["ansible_virtplane_domain"]) == ("test:///default", "web01")
    assert "ansible_connection" not in web and "ansible_virtplane_libvirt_uri" not in data["_meta"]["hostvars"]["db01"]
    consoles, _groups = listed(inventory(tmp_path, engine_options, name="console.virtplane.yml", console=True))
    assert consoles["_meta"]["hostvars"]["web01"]["ansible_connection"] == "virtplane.kvm.console"
    assert "ansible_connection" not in consoles["_meta"]["hostvars"]["db01"]  # Down: on no host
    vm = web["virtplane_vm"]
    assert (vm["status"], vm["host"], vm["memory_mib"], vm["datacenter"]) == ("Up", "hv1", 64, "paris")
    assert "s3cret" not in json.dumps(data) and engine_options["password"] not in json.dumps(data)
    # the hypervisors are not listed unless asked for
    assert "hv1" not in data["_meta"]["hostvars"]

    # what the engine holds is data, never a template run on the controller
    out = subprocess.run([os.path.join(BIN, "ansible"), "-i", path, "web01", "-m", "ansible.builtin.debug", "-a",
                          "msg={{ virtplane_vm.description }}"], env=ENV, cwd=ROOT, capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "lookup('ansible.builtin.pipe', 'touch %s')" % (tmp_path / "templated") in out.stdout
    assert not os.path.exists(tmp_path / "templated")

    graph = ansible_inventory(path, "--graph")
    assert graph.returncode == 0, graph.stderr
    assert "@cluster_prod:" in graph.stdout and "|--web01" in graph.stdout


def test_filters_and_hosts(engine_options, tmp_path):
    assert run_play(setup(tmp_path / "templated"), engine=engine_options).rc == 0
    data, groups = listed(inventory(tmp_path, engine_options, status=["Up"], hosts=True))
    assert groups["virtplane_vms"] == ["web01"]
    assert groups["virtplane_hosts"] == ["hv1", "hv2"]
    assert data["_meta"]["hostvars"]["hv1"]["virtplane_host"]["status"] == "Up"
    assert groups["cluster_prod"] == ["web01"] and groups["hypervisors_prod"] == ["hv1"]
    _data, groups = listed(inventory(tmp_path, engine_options, clusters=["dev"], hosts=True, name="dev.virtplane.yml"))
    assert groups["virtplane_vms"] == ["dev01"] and groups["virtplane_hosts"] == ["hv2"]
    _data, groups = listed(inventory(tmp_path, engine_options, tags=["db", "web"], name="tags.virtplane.yml"))
    assert groups["virtplane_vms"] == ["db01", "web01"]


def test_a_cached_inventory_is_read_without_the_engine_until_it_is_flushed(engine_options, tmp_path):
    assert run_play(setup(tmp_path / "templated"), engine=engine_options).rc == 0
    path = inventory(tmp_path, engine_options, cache=True, cache_plugin="ansible.builtin.jsonfile",
                     cache_connection=str(tmp_path / "cache"), cache_timeout=600)
    _data, groups = listed(path)
    assert groups["virtplane_vms"] == ["db01", "dev01", "web01"]
    assert os.listdir(tmp_path / "cache")
    assert run_play([{"name": "gone", "virtplane.kvm.vm": {"name": "dev01", "state": "absent"}}],
                    engine=engine_options).rc == 0
    _data, groups = listed(path)
    assert groups["virtplane_vms"] == ["db01", "dev01", "web01"]  # from the cache
    _data, groups = listed(path, "--flush-cache")
    assert groups["virtplane_vms"] == ["db01", "web01"]
    # the same file asking for something else is not answered from the cache
    path = inventory(tmp_path, engine_options, cache=True, cache_plugin="ansible.builtin.jsonfile",
                     cache_connection=str(tmp_path / "cache"), cache_timeout=600, status=["Up"])
    _data, groups = listed(path)
    assert groups["virtplane_vms"] == ["web01"]


def test_bad_configurations_are_refused_with_one_clear_message(engine_options, tmp_path):
    wrong = dict(engine_options, password="not-the-password")
    out = ansible_inventory(inventory(tmp_path, wrong), "--list")
    assert out.returncode != 0
    assert "virtplane.kvm.engine: Cannot connect to the engine database '%s' as 'virtplane'" \
        % engine_options["database"] in out.stderr
    assert "password authentication failed" in out.stderr
    assert "not-the-password" not in out.stderr + out.stdout

    for config, message in (
            ({"engine": dict(engine_options, passwd="x")}, "engine.passwd is not an option"),
            ({"engine": dict(engine_options, port=70000)}, "engine.port"),
            ({"engine": dict(engine_options, host="db;rm -rf /")}, "engine.host"),
            ({"engine": engine_options, "status": ["Up\n"]}, "status: 'Up\\n' is not a name"),
            ({"engine": engine_options, "status": ["up"]}, "status: 'up' is not a VM status (Down, WaitForLaunch")):
        path = tmp_path / "bad.virtplane.yml"
        path.write_text(yaml.safe_dump(dict({"plugin": "virtplane.kvm.engine"}, **config)))
        out = ansible_inventory(str(path), "--list")
        assert out.returncode != 0 and message in out.stderr, (config, out.stderr)
        assert engine_options["password"] not in out.stderr
