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
