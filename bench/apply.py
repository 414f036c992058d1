"""How long reconciling many VMs takes, against what Ansible users run today, in the same run.

    make demo                                   # the lab (for the reference and the start overhead)
    .venv/bin/python bench/apply.py --json [--vms 100] [--big 1000] [--no-lab]

Prints one JSON object:
- ``apply_s`` / ``reapply_s``: one ``vm`` task with ``vms:`` defining ``vms`` VMs (not started) on a cluster
  of registered hosts (libvirt's test driver: defined VMs touch no host), then the same task again, which
  changes nothing; ``per_vm_ms`` is the re-apply per VM; ``reapply_1000_s`` the re-apply of ``big`` VMs.
  The engine is a PostgreSQL server of the bench's own; times are the task's, as a callback reports them.
- ``reference_reapply_s``: the same ``vms`` VMs written the way users do it with ``community.libvirt.virt``
  (the PyPI ``ansible`` package, installed under build/bench): one ``define`` task and one ``state`` task
  looped over the VMs, domains defined and not started, against lab host hv1's libvirtd; its unchanged
  re-apply. The domains are undefined afterwards.
- ``start_overhead_s``: one ``vm`` task starting a lab VM on hv1 (the demo's engine, on engine1) minus
  ``virsh create`` of the same domain XML on hv1; median of 3 of each.
Figures that need the lab are null with ``--no-lab`` or when the lab is not up.
"""

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "build", "collections"))

from tests.support.playbook import COLLECTIONS, run_plays  # noqa: E402
from tests.support.postgres import PostgresServer, remove_leftovers  # noqa: E402

BUNDLE = os.path.join(ROOT, "build", "bench", "ansible-12.3.0")
LAB_STATE = "/var/lib/virtplane-lab"
LAB_INVENTORY = os.path.join(ROOT, "inventories", "lab")
HV1 = "10.77.0.11"
IMAGE = LAB_STATE + "/shared/images/lab-guest"
CMDLINE = "console=ttyS0 panic=-1 vp.ip=192.0.2.10/24 vp.name=bench"


def local_play(tasks, engine, extra_env=None):
    return run_plays([{"hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": tasks,
                       "vars": {"ansible_python_interpreter": sys.executable}}], engine=engine, extra_env=extra_env)


def task_seconds(run, name):
    result = run[name]
    if result.get("failed"):
        raise SystemExit("%s failed: %s" % (name, result.get("msg")))
    return result["_duration_s"]


def engine_figures(vms, big):
    from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _provision

    remove_leftovers()
    server = PostgresServer().start()
    try:
        _provision.ensure_database(server.superuser_login(), "bench_apply", "virtplane", "bench-apply-password",
                                   settings={"allow_test_driver": True})
        engine = {"host": server.socket_dir, "port": server.port, "database": "bench_apply", "user": "virtplane",
                  "password": "bench-apply-password"}
        base = [{"virtplane.kvm.datacenter": {"name": "bench"}},
                {"virtplane.kvm.cluster": {"name": "bench", "datacenter": "bench"}},
                {"virtplane.kvm.host": {"name": "hv1", "cluster": "bench", "libvirt_uri": "test:///default"}},
                {"virtplane.kvm.logical_network": {"name": "app", "datacenter": "bench", "mode": "isolated",
                                                   "clusters": [{"name": "bench"}]}}]
        run = local_play(base, engine)
        if run.rc:
            raise SystemExit(run.output[-3000:])

        def items(prefix, count):
            return [{"name": "%s%04d" % (prefix, i), "cluster": "bench", "memory": "256MiB", "vcpus": 1,
                     "nics": [{"network": "app"}], "tags": ["bench"],
                     "boot": {"kernel": "/var/lib/virtplane/images/vmlinuz", "cmdline": "console=ttyS0"}}
                    for i in range(count)]

        figures = {}
        for prefix, count in (("vm", vms), ("big", big)):
            task = {"virtplane.kvm.vm": {"vms": items(prefix, count)}}
            run = local_play([dict(task, name="apply"), dict(task, name="reapply")], engine)
            if run["reapply"].get("changed"):
                raise SystemExit("the unchanged re-apply of %d VMs changed something" % count)
            figures[count] = (task_seconds(run, "apply"), task_seconds(run, "reapply"))
        return figures
    finally:
        server.stop()


def lab_up():
    try:
        with socket.create_connection((HV1, 16509), timeout=2):
            return True
    except OSError:
        return False


def ensure_bundle():
    """The PyPI ansible package (for community.libvirt) and lxml, which its virt module needs, under build/."""
    marker = os.path.join(BUNDLE, ".installed")
    if not os.path.exists(marker):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                        "--target", BUNDLE, "ansible==12.3.0", "lxml==5.3.0"], check=True)
        open(marker, "w").close()
    return BUNDLE


def reference_figure(vms):
    bundle = ensure_bundle()
    env = {"ANSIBLE_COLLECTIONS_PATH": COLLECTIONS + os.pathsep + bundle, "PYTHONPATH": bundle}
    uri = "qemu+tcp://%s/system" % HV1
    names = ["ref%04d" % i for i in range(vms)]
    xml = ("<domain type='qemu'><name>{{ item }}</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>"
           "<os><type arch='x86_64'>hvm</type><kernel>" + IMAGE + "/vmlinuz</kernel><cmdline>console=ttyS0"
           "</cmdline></os><devices><interface type='network'><source network='vp-lab-app'/><model type='virtio'/>"
           "</interface></devices></domain>")
    tasks = [{"name": "define", "community.libvirt.virt": {"command": "define", "xml": xml, "uri": uri},
              "loop": names},
             {"name": "state", "community.libvirt.virt": {"name": "{{ item }}", "state": "shutdown", "uri": uri},
              "loop": names}]
    try:
        timings = []
        for _attempt in range(2):
            started = time.monotonic()
            run = local_play(tasks, None, extra_env=env)
            if run.rc:
                raise SystemExit(run.output[-3000:])
            timings.append(time.monotonic() - started)
        return timings
    finally:
        virt = {"name": "{{ item }}", "command": "undefine", "uri": uri}
        undefine = [{"name": "undefine", "community.libvirt.virt": virt, "loop": names, "ignore_errors": True}]
        local_play(undefine, None, extra_env=env)


def start_overhead(runs=3):
    """Median of a vm task starting a lab VM (the demo's engine) minus median of virsh create of its XML."""
    vm = {"name": "bench-start", "cluster": "Default", "memory": "128MiB", "vcpus": 1, "host": ["hv1"],
          "serial_console": False,
          "boot": {"kernel": IMAGE + "/vmlinuz", "initrd": IMAGE + "/initrd.img", "cmdline": CMDLINE}}
    uri = "qemu+tcp://%s/system" % HV1
    task_times, virsh_times, xml = [], [], None
    try:
        for _attempt in range(runs):
            run = run_plays([{"hosts": "engine", "gather_facts": False, "tasks": [
                {"name": "start", "virtplane.kvm.vm": dict(vm, state="running")}]}], inventory=LAB_INVENTORY)
            task_times.append(task_seconds(run, "start"))
            if xml is None:
                xml = subprocess.run(["virsh", "-c", uri, "dumpxml", "--migratable", "bench-start"], check=True,
                                     capture_output=True, text=True).stdout
                xml = re.sub(r"<uuid>[^<]*</uuid>", "", xml)
            run = run_plays([{"hosts": "engine", "gather_facts": False, "tasks": [
                {"name": "stop", "virtplane.kvm.vm": dict(vm, state="stopped", force=True, stop_timeout=1)}]}],
                inventory=LAB_INVENTORY)
            task_seconds(run, "stop")
        with tempfile.NamedTemporaryFile("w", suffix=".xml") as handle:
            handle.write(xml.replace("<name>bench-start</name>", "<name>bench-virsh</name>"))
            handle.flush()
            for _attempt in range(runs):
                started = time.monotonic()
                subprocess.run(["virsh", "-c", uri, "create", handle.name], check=True, capture_output=True)
                virsh_times.append(time.monotonic() - started)
                subprocess.run(["virsh", "-c", uri, "destroy", "bench-virsh"], check=True, capture_output=True)
    finally:
        run_plays([{"hosts": "engine", "gather_facts": False, "tasks": [
            {"name": "remove", "ignore_errors": True,
             "virtplane.kvm.vm": {"name": "bench-start", "state": "absent", "force": True}}]}],
            inventory=LAB_INVENTORY)
        subprocess.run(["virsh", "-c", uri, "destroy", "bench-virsh"], capture_output=True, check=False)
    return statistics.median(task_times), statistics.median(virsh_times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=100)
    parser.add_argument("--big", type=int, default=1000)
    parser.add_argument("--no-lab", action="store_true", help="skip the figures that need the lab")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object (the default)")
    args = parser.parse_args()

    figures = engine_figures(args.vms, args.big)
    apply_s, reapply_s = figures[args.vms]
    result = {"vms": args.vms, "apply_s": round(apply_s, 3), "reapply_s": round(reapply_s, 3),
              "per_vm_ms": round(reapply_s / args.vms * 1000, 2), "big_vms": args.big,
              "apply_1000_s": round(figures[args.big][0], 3), "reapply_1000_s": round(figures[args.big][1], 3),
              "reference_apply_s": None, "reference_reapply_s": None, "reapply_speedup": None,
              "start_overhead_s": None, "start_task_s": None, "virsh_create_s": None}
    if not args.no_lab and lab_up():
        reference = reference_figure(args.vms)
        result.update(reference_apply_s=round(reference[0], 3), reference_reapply_s=round(reference[1], 3),
                      reapply_speedup=round(reference[1] / reapply_s, 1))
        task, virsh = start_overhead()
        result.update(start_task_s=round(task, 3), virsh_create_s=round(virsh, 3),
                      start_overhead_s=round(task - virsh, 3))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
