# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""libvirt connections: URI validation, bounded connect, error translation, host facts."""

from __future__ import annotations

import ipaddress
import re
import threading
import traceback
import xml.etree.ElementTree as ET
from urllib.parse import parse_qsl, urlsplit

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import HypervisorError, ValidationError

try:
    import libvirt
except ImportError:
    libvirt = None
    LIBVIRT_IMPORT_ERROR = traceback.format_exc()
else:
    LIBVIRT_IMPORT_ERROR = None
    # libvirt prints every error to stderr by default; errors reach callers as exceptions.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

REMOTE_TRANSPORTS = ("tcp", "tls", "ssh", "libssh", "libssh2")
DRIVERS = ("qemu", "test")
_SAFE_TEXT = re.compile(r"^[A-Za-z0-9_.,:/@~+=%-]*$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


def _valid_host(name):
    if not name:
        return False
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return bool(_HOSTNAME.match(name))


def validate_uri(uri, field="libvirt_uri"):
    """Accept the libvirt URIs a host can have; refuse anything else with the reason."""
    if not uri or not isinstance(uri, str):
        raise ValidationError(field, "a libvirt URI is required, e.g. qemu+tls://hv1.example.com/system")
    if any(ch.isspace() or ch in "\"'<>`;|$\\" for ch in uri):
        raise ValidationError(field, "'%s' contains whitespace or shell/XML metacharacters" % uri)
    parts = urlsplit(uri)
    driver, _plus, transport = parts.scheme.partition("+")
    if driver not in DRIVERS:
        raise ValidationError(field, "'%s' has driver '%s'; supported drivers: %s"
                              % (uri, driver or "(none)", ", ".join(DRIVERS)))
    if transport and transport not in REMOTE_TRANSPORTS + ("unix",):
        raise ValidationError(field, "'%s' has transport '%s'; supported: %s"
                              % (uri, transport, ", ".join(REMOTE_TRANSPORTS + ("unix",))))
    if transport in REMOTE_TRANSPORTS:
        if not _valid_host(parts.hostname):
            raise ValidationError(field, "'%s' uses transport '%s' but names no valid host" % (uri, transport))
        try:
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            raise ValidationError(field, "'%s' has an invalid port" % uri)
    elif parts.netloc and transport != "unix" and driver != "test":
        raise ValidationError(field, "'%s' names host '%s' without a transport (use %s+tcp, %s+tls or %s+ssh)"
                              % (uri, parts.netloc, driver, driver, driver))
    if driver == "qemu" and parts.path not in ("/system", "/session"):
        raise ValidationError(field, "'%s' must end in /system (or /session)" % uri)
    if driver == "test" and not (parts.path == "/default" or parts.path.startswith("/")):
        raise ValidationError(field, "'%s': the test driver takes /default or an absolute file path" % uri)
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if not re.match(r"^[a-z_]+$", key) or not _SAFE_TEXT.match(value):
            raise ValidationError(field, "'%s' has an invalid query parameter '%s'" % (uri, key))
    return uri


def _message(exc):
    if libvirt is not None and isinstance(exc, libvirt.libvirtError):
        return exc.get_error_message() or str(exc)
    return str(exc)


def open_connection(uri, timeout=15):
    """Open a libvirt connection, giving up after ``timeout`` seconds.

    libvirt's own connect can block for minutes on an unreachable TCP address; the attempt
    runs in a daemon thread so that a dead host costs at most ``timeout``.
    """
    if libvirt is None:
        raise HypervisorError("The Python library libvirt-python is not installed")
    outcome = {}

    def attempt():
        try:
            outcome["conn"] = libvirt.open(uri)
        except Exception as exc:  # handed to the caller below, translated there
            outcome["error"] = exc

    worker = threading.Thread(target=attempt, name="libvirt-connect", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise HypervisorError("libvirt at %s did not answer within %d s" % (uri, timeout))
    if "error" in outcome:
        raise HypervisorError("cannot connect to libvirt at %s: %s" % (uri, _message(outcome["error"])))
    return outcome["conn"]


def _text(node, path, default=None):
    found = node.find(path) if node is not None else None
    return found.text.strip() if found is not None and found.text else default


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _kib_to_mib(element):
    if element is None or element.text is None:
        return None
    factor = {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024, "b": 1 / 1048576, "bytes": 1 / 1048576}
    return int(int(element.text) * factor.get(element.get("unit", "KiB"), 1 / 1024))


def parse_capabilities(caps_xml):
    """Host facts from libvirt's capabilities XML (pure: unit-testable without libvirt)."""
    root = ET.fromstring(caps_xml)
    host = root.find("host")
    cpu = host.find("cpu") if host is not None else None
    topology = cpu.find("topology") if cpu is not None else None
    arch = _text(cpu, "arch")
    cells = []
    for cell in root.findall("host/topology/cells/cell"):
        cpus = cell.find("cpus")
        cells.append({
            "id": _int(cell.get("id")),
            "memory_mib": _kib_to_mib(cell.find("memory")),
            "cpus": _int(cpus.get("num")) if cpus is not None else 0,
        })
    domain_types = set()
    for guest in root.findall("guest"):
        guest_arch = guest.find("arch")
        if guest_arch is not None and guest_arch.get("name") == arch:
            domain_types.update(d.get("type") for d in guest_arch.findall("domain"))
    facts = {
        "hardware_uuid": _text(host, "uuid"),
        "cpu_arch": arch,
        "cpu_model": _text(cpu, "model"),
        "cpu_vendor": _text(cpu, "vendor"),
        "cpu_sockets": _int(topology.get("sockets")) if topology is not None else None,
        "cpu_cores": _int(topology.get("cores")) if topology is not None else None,
        "cpu_threads": _int(topology.get("threads")) if topology is not None else None,
        "numa_cells": cells,
        "domain_types": sorted(t for t in domain_types if t),
    }
    return facts


def choose_domain_type(hypervisor_type, offered, requested="auto"):
    """kvm when the host offers it (or it is asked for), else TCG ('qemu')."""
    if hypervisor_type == "TEST":
        return "test"
    if requested != "auto":
        if requested not in offered:
            raise ValidationError("domain_type", "'%s' is not offered by this host (it offers: %s)"
                                  % (requested, ", ".join(offered) or "none"))
        return requested
    return "kvm" if "kvm" in offered else "qemu"


def _version(number):
    return "%d.%d.%d" % (number // 1000000, (number // 1000) % 1000, number % 1000)


def read_host_facts(conn, domain_type="auto"):
    """Capacity, CPU and identity of the host behind ``conn``."""
    try:
        facts = parse_capabilities(conn.getCapabilities())
        model, memory_mib, cpus, mhz, _nodes, sockets, cores, threads = conn.getInfo()
        facts["cpu_count"] = cpus
        facts["cpu_mhz"] = mhz
        facts["memory_mib"] = memory_mib
        facts["cpu_arch"] = facts["cpu_arch"] or model
        # capabilities may omit the topology (test driver); getInfo always has it
        facts["cpu_sockets"] = facts["cpu_sockets"] or sockets
        facts["cpu_cores"] = facts["cpu_cores"] or cores
        facts["cpu_threads"] = facts["cpu_threads"] or threads
        facts["hypervisor_type"] = conn.getType()
        facts["libvirt_version"] = _version(conn.getLibVersion())
        facts["hostname"] = conn.getHostname()
    except libvirt.libvirtError as exc:
        raise HypervisorError("cannot read the host's capabilities: %s" % _message(exc))
    facts["domain_type"] = choose_domain_type(facts["hypervisor_type"], facts.pop("domain_types"), domain_type)
    return facts


def probe_host(uri, timeout=15, domain_type="auto"):
    """Connect, read the host facts, disconnect."""
    conn = open_connection(uri, timeout)
    try:
        return read_host_facts(conn, domain_type)
    finally:
        try:
            conn.close()
        except Exception:  # closing a broken connection must not hide the real outcome
            pass
