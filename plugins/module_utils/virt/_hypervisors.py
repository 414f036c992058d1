# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The hypervisors of one module run: one libvirt connection per host, opened once, checked once.

Every connection the collection opens goes through here, so every one is made with the engine's
URI policy (the test driver only where the engine allows it) and a bounded connect; a host that
several steps of a run talk to costs one connection, and a dead host one timeout. A run that only
reads a host asks for a read-only connection; one that changes it gets a read-write one (which
then serves its reads too).
"""

from __future__ import annotations

import concurrent.futures
import threading

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import HypervisorError, VirtplaneError
from ansible_collections.virtplane.kvm.plugins.module_utils.virt import _client


class Hypervisors:
    """Cached libvirt connections keyed by URI; ``close()`` ends them all."""

    def __init__(self, allow_test_driver=False):
        self.allow_test_driver = allow_test_driver
        self._connections = {}  # uri -> (conn, readonly)
        self._failures = {}
        self._opening = {}
        self._retired = []  # connections replaced by read-write ones: closed with the rest, never under a user
        self._lock = threading.Lock()
        self.opened = []  # (uri, readonly) of every connection opened in this run, for tests and benches

    def connect(self, host, timeout=15, readonly=False):
        """The connection to ``host`` (a row with ``libvirt_uri``), opened on first use.

        A host that did not answer once in this run is not asked again: the same reason comes back.
        """
        uri = host["libvirt_uri"]
        with self._lock:
            opening = self._opening.setdefault(uri, threading.Lock())
        # one opener per URI at a time: two hosts on one URI, or two threads of a run, share one connection
        with opening:
            with self._lock:
                cached = self._connections.get(uri)
                failure = self._failures.get(uri)
            if failure is not None:
                raise failure
            if cached is not None and (readonly or not cached[1]) and _alive(cached[0]):
                return cached[0]
            try:
                conn = _client.open_connection(uri, timeout, self.allow_test_driver, readonly)
            except VirtplaneError as exc:
                with self._lock:
                    self._failures[uri] = exc
                raise
            with self._lock:
                self.opened.append((uri, readonly))
                previous = self._connections.get(uri)
                self._connections[uri] = (conn, readonly)
                if previous is not None:  # a read-only one, outgrown: it serves nobody once replaced
                    self._retired.append(previous[0])
            return conn

    def call(self, host, action, function, timeout=15, readonly=False):
        """``function(conn)`` on ``host``; a failure reads "Failed to <action> on host <name>: <reason>"."""
        try:
            return function(self.connect(host, timeout, readonly))
        except HypervisorError as exc:
            raise HypervisorError("Failed to %s on host %s: %s" % (action, host["name"], exc), host=host["name"])

    def on_hosts(self, hosts, operation, timeout=15, readonly=False):
        """``operation(conn, host_row)`` on every host in parallel.

        Returns {host name: (result, None) or (None, reason)}: one slow or dead host costs
        ``timeout`` once and never hides what the others answered.
        """
        def run(host):
            try:
                return operation(self.connect(host, timeout, readonly), host), None
            except VirtplaneError as exc:
                return None, str(exc)

        hosts = list(hosts)
        if not hosts:
            return {}
        if len(hosts) == 1:
            return {hosts[0]["name"]: run(hosts[0])}
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
            outcomes = list(pool.map(run, hosts))
        return {h["name"]: outcome for h, outcome in zip(hosts, outcomes)}  # noqa: B905 - same length

    def close(self):
        with self._lock:
            connections, self._connections = [c for c, _ro in self._connections.values()], {}
            connections += self._retired
            self._retired = []
        for conn in connections:
            _close(conn)


def _alive(conn):
    try:
        return conn.isAlive() == 1
    except Exception:  # a connection that cannot even say is not one to use
        return False


def _close(conn):
    try:
        conn.close()
    except Exception:  # closing a broken connection must not hide the real outcome
        pass
