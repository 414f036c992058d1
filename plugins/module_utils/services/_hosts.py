# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reaching the hosts of a run: the run's hypervisor registry, many hosts at once, their failures."""

from __future__ import annotations

from ansible_collections.virtplane.kvm.plugins.module_utils.virt._hypervisors import Hypervisors


def hypervisors(engine):
    """The run's one registry of libvirt connections, made with the engine's URI policy."""
    if engine.hypervisors is None:
        engine.hypervisors = Hypervisors(engine.allow_test_driver)
    return engine.hypervisors


def sibling(engine):
    """An engine for another thread of this run: its own database connection, this run's libvirt connections."""
    hypervisors(engine)
    return engine.sibling()


def connect(engine, host, timeout=15, readonly=False):
    return hypervisors(engine).connect(host, timeout, readonly)


def on_hosts(engine, hosts, operation, timeout=15, readonly=False):
    """``operation(conn, host_row)`` on every host in parallel: {name: (result, None) or (None, reason)}."""
    return hypervisors(engine).on_hosts(hosts, operation, timeout, readonly)


def failures(outcomes):
    return {name: reason for name, (_result, reason) in outcomes.items() if reason}


def describe_failures(failed):
    return "; ".join("%s: %s" % (name, failed[name]) for name in sorted(failed))
