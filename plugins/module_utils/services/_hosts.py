# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running one libvirt operation on many hosts at once, each with its own bounded connection."""

from __future__ import annotations

import concurrent.futures

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import VirtplaneError
from ansible_collections.virtplane.kvm.plugins.module_utils.virt import _client


def on_hosts(hosts, operation, timeout=15):
    """``operation(conn, host_row)`` on every host in parallel.

    Returns {host name: (result, None) or (None, reason)}: one slow or dead host costs
    ``timeout`` once and never hides what the others answered.
    """
    def run(host):
        try:
            conn = _client.open_connection(host["libvirt_uri"], timeout)
        except VirtplaneError as exc:
            return None, str(exc)
        try:
            return operation(conn, host), None
        except VirtplaneError as exc:
            return None, str(exc)
        finally:
            try:
                conn.close()
            except Exception:  # a broken connection must not hide the outcome
                pass

    hosts = list(hosts)
    if not hosts:
        return {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
        outcomes = list(pool.map(run, hosts))
    return {h["name"]: outcome for h, outcome in zip(hosts, outcomes)}  # noqa: B905 - same length


def failures(outcomes):
    return {name: reason for name, (_result, reason) in outcomes.items() if reason}


def describe_failures(failed):
    return "; ".join("%s: %s" % (name, failed[name]) for name in sorted(failed))


def check_hosts(engine, names, timeout):
    """Check these hosts now, as host_info refresh does: realize what their cluster uses, set their status."""
    from ansible_collections.virtplane.kvm.plugins.module_utils.services import _host

    if names:
        _host.host_info(engine, names=sorted(set(names)), refresh=True, probe_timeout=timeout)
