"""The AWX job templates (playbooks/awx) run as AWX runs them: through ansible-runner, the survey's answers as extra
vars and the engine connection from the job's credential (the VIRTPLANE_ENGINE_* environment variables), on a real
engine database with libvirt's test driver as the hosts."""

import glob
import json
import os
import re

import ansible_runner
import pytest

from tests.support.engine import engine_write
from tests.support.playbook import BIN, COLLECTIONS, ROOT, run_play

AWX = os.path.join(ROOT, "playbooks", "awx")
SETUP = [{"name": "dc", "virtplane.kvm.datacenter": {"name": "paris"}},
         {"name": "prod", "virtplane.kvm.cluster": {"name": "prod", "datacenter": "paris"}},
         {"name": "hv1", "virtplane.kvm.host": {"name": "hv1", "cluster": "prod", "libvirt_uri": "test:///default"}},
         {"name": "hv2", "virtplane.kvm.host": {"name": "hv2", "cluster": "prod", "libvirt_uri": "test:///default"}}]
INVENTORY = {"all": {"children": {
    "engine": {"hosts": {"engine1": {}}},
    "hypervisors": {"hosts": {"hv1": {}, "hv2": {}}}},
    "vars": {"ansible_connection": "local", "ansible_python_interpreter": os.path.join(BIN, "python")}}}


def survey(name):
    with open(os.path.join(AWX, "surveys", name + ".json")) as handle:
        return json.load(handle)


def answers(name, **given):
    """The survey's defaults, as AWX sends them, with these answers."""
    values = {q["variable"]: q["default"] for q in survey(name)["spec"]}
    values.update(given)
    return values


@pytest.fixture
def job(engine_options, tmp_path):
    assert run_play(SETUP, engine=engine_options).rc == 0
    credential = {"VIRTPLANE_ENGINE_HOST": engine_options["host"], "VIRTPLANE_ENGINE_PORT": str(engine_options["port"]),
                  "VIRTPLANE_ENGINE_DATABASE": engine_options["database"],
                  "VIRTPLANE_ENGINE_PASSWORD": engine_options["password"]}
    runs = []

    def launch(template, extra_vars, check=False):
        runs.append(template)
        private = tmp_path / ("job%d" % len(runs))
        private.mkdir()
        result = ansible_runner.run(
            private_data_dir=str(private), playbook=os.path.join(AWX, template + ".yml"),
            inventory=INVENTORY, extravars=extra_vars, cmdline="--check" if check else None, quiet=True,
            envvars=dict(credential, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, PATH=BIN + os.pathsep + os.environ["PATH"],
                         ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg")))
        events = list(result.events)
        stdout = result.stdout.read()
        assert engine_options["password"] not in stdout + json.dumps(events)
        failed = [e["event_data"]["res"].get("msg", "") for e in events if e["event"] == "runner_on_failed"]
        debug = [e["event_data"]["res"].get("msg") for e in events
                 if e["event"] == "runner_on_ok" and e["event_data"].get("task_action") == "ansible.builtin.debug"]
        return {"status": result.status, "changed": result.stats["changed"], "failed": failed, "debug": debug,
                "hosts_failed": sorted(result.stats["failures"]), "stdout": stdout}
    return launch


def test_every_job_template_has_a_survey_and_uses_each_of_its_variables():
    templates = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(AWX, "*.yml")))
    assert templates == ["failover_test", "host_maintenance", "vm_create", "vm_migrate"]
    for template in templates:
        spec = survey(template)
        assert spec["name"] and spec["description"] and spec["spec"]
        with open(os.path.join(AWX, template + ".yml")) as handle:
            text = handle.read()
        if "import_playbook: ../maintenance.yml" in text:
            with open(os.path.join(ROOT, "playbooks", "maintenance.yml")) as handle:
                text += handle.read()
        header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
        for question in spec["spec"]:
            assert question["type"] in ("text", "textarea", "integer", "multiplechoice")
            assert re.search(r"\b%s\b" % question["variable"], header), (template, question["variable"])
            assert re.search(r"{{[^}]*\b%s\b" % question["variable"], text), (template, question["variable"])


def test_vm_create_job_defines_the_vm_then_changes_nothing_and_refuses_bad_answers(job, sql):
    given = answers("vm_create", vm_name="web01", vm_cluster="prod", vm_memory="512MiB", vm_vcpus=2,
                    vm_tags="web,\nfrontend", vm_state="present")
    first = job("vm_create", given)
    assert first["status"] == "successful", first["stdout"][-2000:]
    assert first["changed"] == {"engine1": 1}
    assert first["debug"] == ["VM web01 Down"]
    [vm] = sql("SELECT name, memory_mib, vcpus, tags FROM vm")
    assert (vm["memory_mib"], vm["vcpus"], sorted(vm["tags"])) == (512, 2, ["frontend", "web"])
    again = job("vm_create", given)
    assert again["status"] == "successful" and again["changed"] == {}

    for bad, message in ((dict(vm_name="web02;reboot"), "name"), (dict(vm_name="web02", vm_memory="-1GiB"), "memory"),
                         (dict(vm_name="web02", vm_cluster="nowhere"), "nowhere")):
        for check in (True, False):
            run = job("vm_create", dict(given, **bad), check=check)
            assert run["status"] == "failed" and len(run["failed"]) == 1, run["stdout"][-2000:]
            assert message in run["failed"][0] and "\n" not in run["failed"][0]
    assert [r["name"] for r in sql("SELECT name FROM vm")] == ["web01"]


def test_vm_migrate_job_refuses_a_vm_that_does_not_run_in_check_and_real_jobs(job):
    assert job("vm_create", answers("vm_create", vm_name="db01", vm_cluster="prod", vm_memory="256MiB",
                                    vm_state="present"))["status"] == "successful"
    for check in (True, False):
        run = job("vm_migrate", answers("vm_migrate", vm_name="db01", migrate_to_host="hv2"), check=check)
        assert run["status"] == "failed"
        assert run["failed"] == ["Cannot migrate VM 'db01': it is Down; only a running VM (Up) migrates"]


def test_host_maintenance_job_drains_and_brings_back_each_host(job, sql):
    run = job("host_maintenance", answers("host_maintenance", maintenance_hosts="hv1,hv2"))
    assert run["status"] == "successful", run["stdout"][-2000:]
    assert run["changed"] == {"hv1": 2, "hv2": 2}
    # one host at a time: drained, in maintenance, back
    events = [(r["object_name"], r["code"]) for r in sql("SELECT object_name, code FROM event WHERE object_type = "
                                                         "'host' AND code <> 'HOST_ADDED' ORDER BY id")]
    assert events == [(host, code) for host in ("hv1", "hv2")
                      for code in ("HOST_MAINTENANCE_STARTED", "HOST_MAINTENANCE", "HOST_STATUS_CHANGED")]
    assert {r["status"] for r in sql("SELECT status FROM host")} == {"Up"}


def test_failover_test_job_plans_each_drain_and_names_what_could_not_go(job, engine_options, sql):
    assert job("vm_create", answers("vm_create", vm_name="db01", vm_cluster="prod", vm_memory="256MiB",
                                    vm_state="present"))["status"] == "successful"
    # db01 runs on hv1, as a start would have recorded it
    engine_write(engine_options, [
        "UPDATE vm_runtime SET status = 'Up', run_host_id = (SELECT id FROM host WHERE name = 'hv1'),"
        " reserved_memory_mib = 256, reserved_vcpus = 1 WHERE vm_id = (SELECT id FROM vm WHERE name = 'db01')"])
    before = sql("SELECT h.name, h.status, r.status AS vm FROM host h LEFT JOIN vm_runtime r ON r.run_host_id = h.id"
                 " ORDER BY 1")
    run = job("failover_test", answers("failover_test"))
    assert run["status"] == "successful", run["stdout"][-2000:]
    assert sorted(map(str, run["debug"])) == ["['migrate VM db01 (to hv2, as things are now)']", "['no VM to move']"]

    engine_write(engine_options, ["UPDATE host SET status = 'Maintenance' WHERE name = 'hv2'"])
    run = job("failover_test", answers("failover_test", failover_hosts="hv1"))
    assert run["status"] == "failed" and run["hosts_failed"] == ["hv1"]
    [message] = run["failed"]
    assert message.startswith("Cannot put host hv1 into maintenance: VM db01 cannot leave it"), message
    engine_write(engine_options, ["UPDATE host SET status = 'Up' WHERE name = 'hv2'"])
    assert sql("SELECT h.name, h.status, r.status AS vm FROM host h LEFT JOIN vm_runtime r ON r.run_host_id = h.id"
               " ORDER BY 1") == before
