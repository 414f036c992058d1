"""Which libvirt URIs a host may be registered with, and what the refusal says."""

import pytest

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import ValidationError
from ansible_collections.virtplane.kvm.plugins.module_utils.virt._client import validate_uri


@pytest.mark.parametrize("uri", [
    "qemu:///system",
    "qemu+tls://hv1.example.com/system",
    "qemu+tcp://10.77.0.11/system",
    "qemu+tcp://10.77.0.11:16509/system",
    "qemu+ssh://root@hv1/system",
    "qemu+ssh://root@hv1/system?keyfile=/root/.ssh/id_ed25519&no_verify=1",
    "qemu+tls://[2001:db8::5]/system",
    "qemu+unix:///system?socket=/run/libvirt/libvirt-sock",
    "test:///default",
    "test:///var/lib/virtplane/node.xml",
])
def test_accepted(uri):
    assert validate_uri(uri) == uri


@pytest.mark.parametrize("uri, cause", [
    ("", "a libvirt URI is required"),
    ("xen:///system", "driver 'xen'"),
    ("qemu+http://hv1/system", "transport 'http'"),
    ("qemu+tcp:///system", "names no valid host"),
    ("qemu+tcp://hv_1!/system", "names no valid host"),
    ("qemu+tcp://hv1:99999/system", "invalid port"),
    ("qemu://hv1/system", "without a transport"),
    ("qemu+tls://hv1/", "must end in /system"),
    ("qemu+tls://hv1/system; rm -rf /", "metacharacters"),
    ("qemu+tls://hv1/system?keyfile=$(id)", "metacharacters"),
    ("qemu+tls://hv1/system?x=<a>", "metacharacters"),
    ("test://default", "test driver"),
])
def test_refused_with_the_cause(uri, cause):
    with pytest.raises(ValidationError) as error:
        validate_uri(uri)
    assert error.value.field == "libvirt_uri"
    assert "libvirt_uri" in str(error.value)
    assert cause in str(error.value)
