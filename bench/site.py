"""A whole data center description applied, and applied again unchanged, against the same objects written the
ovirt.ovirt way (one task per object), in the same run.

    .venv/bin/python bench/site.py --json [--hosts 10] [--vms 200]

Prints one JSON object:
- ``site_apply_s`` / ``site_reapply_s``: ``playbooks/datacenter.yml`` (what ``site.yml`` applies after the roles)
  on a description of one data center, one cluster, ``hosts`` hosts (libvirt's test driver) and ``vms`` VMs
  (defined, not started), first on an empty engine, then again unchanged; wall time of ``ansible-playbook``.
- ``reference_apply_s`` / ``reference_reapply_s``: the same objects from a playbook with one task per host and
  one per VM (a loop over ``virtplane.kvm.host`` and ``virtplane.kvm.vm`` with ``name:``), the way playbooks
  written for ``ovirt.ovirt`` make them, on an engine database of its own.
- ``reapply_speedup``: ``reference_reapply_s / site_reapply_s``.
- ``site_reapply_changed``: whether the unchanged re-apply changed anything (it must not).
Both engines are databases of one PostgreSQL server of the bench's own, removed afterwards.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "build", "collections"))

from tests.support.playbook import run_plays  # noqa: E402
from tests.support.postgres import PostgresServer, remove_leftovers  # noqa: E402

DATACENTER = os.path.join(ROOT, "playbooks", "datacenter.yml")


def description(hosts, vms):
    return {
        "virtplane_datacenter": "bench",
        "virtplane_clusters": [{"name": "bench", "datacenter": "bench"}],
        "virtplane_hosts": [{"name": "hv%02d" % i, "cluster": "bench", "libvirt_uri": "test:///default"}
                            for i in range(hosts)],
        "virtplane_vms": [{"name": "vm%04d" % i, "cluster": "bench", "memory": "256MiB", "vcpus": 1,
                           "tags": ["bench"], "boot": {"kernel": "/var/lib/virtplane/images/vmlinuz",
                                                       "cmdline": "console=ttyS0"}} for i in range(vms)],
    }


def credential(engine):
    return {"VIRTPLANE_ENGINE_HOST": engine["host"], "VIRTPLANE_ENGINE_PORT": str(engine["port"]),
            "VIRTPLANE_ENGINE_DATABASE": engine["database"], "VIRTPLANE_ENGINE_PASSWORD": engine["password"]}


def timed(plays, engine, inventory=None):
    started = time.monotonic()
    run = run_plays(plays, extra_env=credential(engine), inventory=inventory)
    seconds = round(time.monotonic() - started, 2)
    if run.rc:
        raise SystemExit(run.output[-3000:])
    return seconds, run


def site(engine, described, directory):
    inventory = os.path.join(directory, "site.yml")
    with open(inventory, "w") as handle:
        yaml.safe_dump({"all": {"children": {"engine": {"hosts": {"engine1": {
            "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}, "vars": described}},
            handle)
    plays = [{"import_playbook": DATACENTER}]
    first, _run = timed(plays, engine, inventory)
    again, run = timed(plays, engine, inventory)
    return first, again, bool(run.changed_tasks)


def reference(engine, described):
    """One task per host and per VM, as playbooks for ovirt.ovirt loop ovirt_host and ovirt_vm."""
    play = {"hosts": "localhost", "connection": "local", "gather_facts": False,
            "vars": dict(described, ansible_python_interpreter=sys.executable), "tasks": [
                {"name": "Data center", "virtplane.kvm.datacenter": {"name": "bench"}},
                {"name": "Cluster", "virtplane.kvm.cluster": {"name": "bench", "datacenter": "bench"}},
                {"name": "Hosts", "loop": "{{ virtplane_hosts }}", "virtplane.kvm.host": {
                    "name": "{{ item.name }}", "cluster": "{{ item.cluster }}",
                    "libvirt_uri": "{{ item.libvirt_uri }}"}},
                {"name": "VMs", "loop": "{{ virtplane_vms }}", "loop_control": {"label": "{{ item.name }}"},
                 "virtplane.kvm.vm": {"name": "{{ item.name }}", "cluster": "{{ item.cluster }}",
                                      "memory": "{{ item.memory }}", "vcpus": "{{ item.vcpus }}",
                                      "tags": "{{ item.tags }}", "boot": "{{ item.boot }}"}}]}
    first, _run = timed([play], engine)
    again, _run = timed([play], engine)
    return first, again


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--vms", type=int, default=200)
    args = parser.parse_args()
    from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _provision

    remove_leftovers()
    server = PostgresServer().start()
    try:
        engines = {}
        for name in ("bench_site", "bench_reference"):
            # one role for both databases, one password
            _provision.ensure_database(server.superuser_login(), name, "virtplane", "bench-site-password",
                                       settings={"allow_test_driver": True})
            engines[name] = {"host": server.socket_dir, "port": server.port, "database": name, "user": "virtplane",
                             "password": "bench-site-password"}
        described = description(args.hosts, args.vms)
        with tempfile.TemporaryDirectory(prefix="virtplane-bench-site-") as directory:
            site_apply, site_reapply, changed = site(engines["bench_site"], described, directory)
        reference_apply, reference_reapply = reference(engines["bench_reference"], described)
    finally:
        server.stop()
    figures = {"hosts": args.hosts, "vms": args.vms, "site_apply_s": site_apply, "site_reapply_s": site_reapply,
               "site_reapply_changed": changed, "reference_apply_s": reference_apply,
               "reference_reapply_s": reference_reapply,
               "reapply_speedup": round(reference_reapply / site_reapply, 1),
               "targets": {"reapply_speedup_at_least": 10, "site_reapply_s_under": 10}}
    print(json.dumps(figures, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
