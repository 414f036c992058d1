"""Host facts read from libvirt capabilities, and the choice between KVM and TCG."""

import pytest

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import ValidationError
from ansible_collections.virtplane.kvm.plugins.module_utils.virt._client import (
    choose_domain_type,
    parse_capabilities,
    parse_cpu_models,
)

KVM_HOST = """
<capabilities>
  <host>
    <uuid>4c4c4544-0042-3510-8052-b3c04f4e3232</uuid>
    <cpu>
      <arch>x86_64</arch>
      <model>Skylake-Client-IBRS</model>
      <vendor>Intel</vendor>
      <topology sockets='1' dies='1' cores='4' threads='2'/>
    </cpu>
    <topology>
      <cells num='2'>
        <cell id='0'><memory unit='KiB'>16384000</memory><cpus num='4'/></cell>
        <cell id='1'><memory unit='KiB'>16384000</memory><cpus num='4'/></cell>
      </cells>
    </topology>
  </host>
  <guest>
    <os_type>hvm</os_type>
    <arch name='x86_64'>
      <domain type='qemu'/>
      <domain type='kvm'/>
    </arch>
  </guest>
  <guest>
    <os_type>hvm</os_type>
    <arch name='i686'><domain type='qemu'/></arch>
  </guest>
</capabilities>
"""

TCG_ONLY = KVM_HOST.replace("<domain type='kvm'/>", "")


def test_reads_identity_cpu_and_numa():
    facts = parse_capabilities(KVM_HOST)
    assert facts["hardware_uuid"] == "4c4c4544-0042-3510-8052-b3c04f4e3232"
    assert (facts["cpu_arch"], facts["cpu_model"], facts["cpu_vendor"]) == ("x86_64", "Skylake-Client-IBRS", "Intel")
    assert (facts["cpu_sockets"], facts["cpu_cores"], facts["cpu_threads"]) == (1, 4, 2)
    assert facts["numa_cells"] == [{"id": 0, "memory_mib": 16000, "cpus": 4}, {"id": 1, "memory_mib": 16000, "cpus": 4}]
    assert facts["domain_types"] == ["kvm", "qemu"]


def test_only_the_host_arch_counts_for_domain_types():
    assert parse_capabilities(TCG_ONLY)["domain_types"] == ["qemu"]


@pytest.mark.parametrize("hypervisor, offered, requested, expected", [
    ("QEMU", ["kvm", "qemu"], "auto", "kvm"),
    ("QEMU", ["qemu"], "auto", "qemu"),
    ("QEMU", ["kvm", "qemu"], "qemu", "qemu"),
    ("TEST", [], "auto", "test"),
])
def test_domain_type(hypervisor, offered, requested, expected):
    assert choose_domain_type(hypervisor, offered, requested) == expected


def test_forcing_kvm_where_it_is_not_offered_is_refused():
    with pytest.raises(ValidationError, match="Invalid value for 'domain_type': 'kvm' is not offered by this host"):
        choose_domain_type("QEMU", ["qemu"], "kvm")


DOMAIN_CAPABILITIES = """
<domainCapabilities>
  <path>/usr/bin/qemu-system-x86_64</path>
  <domain>qemu</domain>
  <arch>x86_64</arch>
  <cpu>
    <mode name='host-passthrough' supported='no'/>
    <mode name='host-model' supported='yes'><model fallback='forbid'>EPYC</model></mode>
    <mode name='custom' supported='yes'>
      <model usable='yes' vendor='unknown'>qemu64</model>
      <model usable='yes' vendor='AMD'>Opteron_G1</model>
      <model usable='no' vendor='Intel'>Skylake-Client</model>
      <model usable='unknown' vendor='Intel'>Cascadelake-Server</model>
    </mode>
  </cpu>
</domainCapabilities>
"""


def test_the_cpu_models_a_host_can_give_are_the_usable_custom_ones():
    assert parse_cpu_models(DOMAIN_CAPABILITIES) == ["Opteron_G1", "qemu64"]


def test_no_custom_mode_means_no_model():
    assert parse_cpu_models("<domainCapabilities><cpu><mode name='custom' supported='no'/></cpu>"
                            "</domainCapabilities>") == []
