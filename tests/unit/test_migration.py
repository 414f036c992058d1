"""What the migration code decides without a host: the destination's domain XML, and what a failure says."""

import xml.etree.ElementTree as ET

from ansible_collections.virtplane.kvm.plugins.module_utils.services import _migrate
from ansible_collections.virtplane.kvm.plugins.module_utils.virt import _migration


def test_a_post_copy_refused_for_want_of_userfaultfd_says_so():
    said = _migrate.explained("post_copy", "Failed to migrate VM 'db' to host hv2 on host hv1: internal error: "
                              "unable to execute QEMU command 'migrate-set-capabilities': Postcopy is not supported",
                              "hv2")
    assert said.endswith("Postcopy is not supported (host hv2 cannot take a post-copy migration: its QEMU cannot use "
                         "userfaultfd, which needs vm.unprivileged_userfaultfd=1 there; another policy, or "
                         "auto_converge, can move the VM)")
    other = "Failed to migrate VM 'db' to host hv2 on host hv1: Unable to connect"
    assert _migrate.explained("legacy", other, "hv2") == other
    assert _migrate.explained("post_copy", other, "hv2") == other


def test_the_destination_appends_to_the_serial_console_log_and_changes_nothing_else():
    source = ("<domain type='qemu'><name>web</name><devices>"
              "<disk type='file' device='disk'><source file='/srv/shared/web.qcow2'/></disk>"
              "<serial type='file'><source path='/var/lib/virtplane/local/web-console.log'/><target port='0'/></serial>"
              "<console type='file'><source path='/var/lib/virtplane/local/web-console.log'/></console>"
              "<serial type='pty'><source path='/dev/pts/3'/></serial>"
              "</devices></domain>")
    root = ET.fromstring(_migration.destination_xml(source))
    files = root.findall("devices/serial[@type='file']/source") + root.findall("devices/console[@type='file']/source")
    assert [s.get("append") for s in files] == ["on", "on"]
    assert root.find("devices/serial[@type='pty']/source").get("append") is None
    assert root.find("devices/disk/source").attrib == {"file": "/srv/shared/web.qcow2"}


def test_steering_waits_for_the_second_pass_then_acts_when_an_iteration_stops_shrinking():
    """No steering on the set-up and the first pass (everything is sent once then, whatever the guest does); from
    the second pass on, an iteration that does not shrink what remains by a tenth switches post_copy, steps
    minimal_downtime's allowed downtime up (and at last aborts it), and leaves legacy alone."""
    readings = [(0, 0.0), (1, 250.0), (1, 100.0), (2, 40.0), (2, 20.0), (3, 39.0), (4, 38.0), (4, 37.0)]
    readings += [(n, 38.0) for n in range(5, 12)]
    expected = {"post_copy": [("postcopy", "switched to post-copy at iteration 3 (39.0 MiB remaining)")],
                "minimal_downtime": [("downtime", ms) for ms in _migration.DOWNTIME_STEPS[1:]] + [
                    ("abort", "pre-copy did not converge with 500 ms of allowed downtime (38.0 MiB remaining at "
                              "iteration %d)" % (2 + len(_migration.DOWNTIME_STEPS) - 1 + _migration.STALL_STEPS))],
                "legacy": [], "suspend_workload": []}
    for policy, actions in expected.items():
        steering = _migration._Steering(None, policy, [])
        decided = []
        for iteration, remaining in readings:
            action = steering.decide({"memory_iteration": iteration, "data_remaining_mib": remaining})
            if action is not None:
                decided.append(action)
                if action[0] in ("postcopy", "abort"):
                    break
        assert decided == actions, (policy, decided)
