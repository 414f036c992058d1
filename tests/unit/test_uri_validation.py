"""Which libvirt URIs a host may be registered with, and what the refusal says."""

import pytest

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import ValidationError
from ansible_collections.virtplane.kvm.plugins.module_utils.virt._client import redact_uri, safe_message, validate_uri


@pytest.mark.parametrize("uri", [
    "qemu:///system",
    "qemu+unix:///system",
    "qemu+tls://hv1.example.com/system",
    "qemu+tls://hv1.example.com/system?pkipath=/etc/virtplane/pki/client",
    "qemu+tcp://10.77.0.11/system",
    "qemu+tcp://10.77.0.11:16509/system",
    "qemu+ssh://root@hv1/system",
    "qemu+ssh://root@hv1/system?keyfile=/root/.ssh/id_ed25519&no_verify=1",
    "qemu+libssh://root@hv1/system?sshauth=agent,privkey&known_hosts_verify=normal",
    "qemu+tls://[2001:db8::5]/system",
])
def test_accepted(uri):
    assert validate_uri(uri) == uri


@pytest.mark.parametrize("uri", ["test:///default", "test:///var/lib/virtplane/node.xml"])
def test_the_test_driver_only_where_the_engine_allows_it(uri):
    assert validate_uri(uri, allow_test_driver=True) == uri
    with pytest.raises(ValidationError, match="uses libvirt's test driver: the test driver simulates a host"):
        validate_uri(uri)


@pytest.mark.parametrize("uri, cause", [
    ("", "a libvirt URI is required"),
    ("xen:///system", "driver 'xen'"),
    ("qemu+http://hv1/system", "transport 'http'"),
    ("qemu+ext:///system?command=/bin/sh", "transport 'ext'"),
    ("qemu+tcp:///system", "names no valid host"),
    ("qemu+tcp://hv_1!/system", "names no valid host"),
    ("qemu+tcp://hv1:99999/system", "not a valid URI"),
    ("qemu+tcp://hv1:0/system", "invalid port"),
    ("qemu://hv1/system", "without a transport"),
    ("qemu+tls://hv1/", "must end in /system"),
    ("qemu:///session", "a session libvirtd runs as one user"),
    ("qemu+tls://hv1/system#frag", "fragment"),
    ("qemu+tls://hv1/system; rm -rf /", "metacharacters"),
    ("qemu+tls://hv1/system?pkipath=$(id)", "metacharacters"),
    ("qemu+tls://hv1/system?x=<a>", "metacharacters"),
    ("qemu+tls://hv1/system\n", "control characters"),
    ("qemu+tls://hv1/system%0a", "must end in /system"),
    # parameters that point libvirt at another socket, program or URI than the host's own
    ("qemu:///system?socket=/etc/shadow", "query parameter 'socket', which the engine does not pass"),
    ("qemu+unix:///system?socket=/tmp/evil", "query parameter 'socket'"),
    ("qemu+ssh://hv1/system?command=/tmp/evil", "query parameter 'command'"),
    ("qemu+ssh://hv1/system?netcat=/tmp/evil", "query parameter 'netcat'"),
    ("qemu+ssh://hv1/system?name=test:///etc/passwd", "query parameter 'name'"),
    ("qemu+tcp://hv1/system?pkipath=/etc", "query parameter 'pkipath'"),
    ("qemu+tls://hv1/system?pkipath=/etc/../root", "invalid value for query parameter 'pkipath'"),
    ("qemu+tls://hv1/system?pkipath=%2Fetc%0A", "invalid value for query parameter 'pkipath'"),
    ("qemu+tls://hv1/system?no_verify=yes", "invalid value for query parameter 'no_verify'"),
    ("qemu+tls://hv1/system?no_verify=0&no_verify=1", "twice"),
    ("qemu+ssh://bad%20user@hv1/system", "invalid user"),
])
def test_refused_with_the_cause(uri, cause):
    with pytest.raises(ValidationError) as error:
        validate_uri(uri, allow_test_driver=True)
    assert error.value.field == "libvirt_uri"
    assert "libvirt_uri" in str(error.value)
    assert cause in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("uri", ["test://default", "test:///etc/shadow", "test:///etc/../tmp/node.xml",
                                 "test:///default?x=1", "test://hv1/tmp/node.xml", "test:///tmp/node.xml\n"])
def test_the_test_driver_reads_node_xml_files_only(uri):
    with pytest.raises(ValidationError, match="test driver|control characters"):
        validate_uri(uri, allow_test_driver=True)


@pytest.mark.parametrize("uri", ["qemu+tcp://admin:s3cret@hv1/system", "qemu+ssh://root:s3cret@hv1/system",
                                 "qemu+tls://:s3cret@hv1/system", "qemu+ssh://root:s3cret@hv1/system;x"])
def test_credentials_are_refused_and_never_repeated(uri):
    with pytest.raises(ValidationError) as error:
        validate_uri(uri)
    assert "s3cret" not in str(error.value)
    assert "***" in str(error.value)


def test_redaction_and_safe_libvirt_messages():
    assert redact_uri("at qemu+ssh://root:pw@hv1/system and qemu+tcp://u:x@h/system") == (
        "at qemu+ssh://root:***@hv1/system and qemu+tcp://u:***@h/system")
    # libxml2 quotes the offending line of the document it could not parse
    leaked = "/etc/shadow:1: Start tag expected, '<' not found\nroot:*:20228:0:99999:7:::\n^"
    assert safe_message(leaked, 35) == "cannot parse the XML document /etc/shadow (line 1)"
    assert safe_message("first line\nsecond line") == "first line"
    assert len(safe_message("x" * 5000)) < 500
