# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""libvirt connections: URI validation, bounded connect, error translation, host facts."""

from __future__ import annotations

import functools
import posixpath
import re
import threading
import traceback
import xml.etree.ElementTree as ET
from urllib.parse import parse_qsl, urlsplit

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import HypervisorError, ValidationError
from ansible_collections.virtplane.kvm.plugins.module_utils._validation import shown, validate_host_name

try:
    import libvirt
except ImportError:
    libvirt = None
    LIBVIRT_IMPORT_ERROR = traceback.format_exc()
else:
    LIBVIRT_IMPORT_ERROR = None
    # libvirt prints every error to stderr by default; errors reach callers as exceptions.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

DRIVERS = ("qemu", "test")
REMOTE_TRANSPORTS = ("tcp", "tls", "ssh", "libssh", "libssh2")
LOCAL_TRANSPORTS = ("unix",)
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}")
_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f\"'<>`;|$\\]")
_SSH_PARAMETERS = {"keyfile": "path", "known_hosts": "path", "no_verify": "flag"}
# The query parameters the engine hands to libvirt, per transport, and what their values may be.
# Everything else is refused: 'socket', 'command', 'netcat', 'name' and 'proxy' point libvirt at
# another socket, program or URI than the host's own libvirtd.
PARAMETERS = {
    "tls": {"pkipath": "path", "no_verify": "flag"},
    "tcp": {},
    "ssh": dict(_SSH_PARAMETERS, no_tty="flag"),
    "libssh": dict(_SSH_PARAMETERS, known_hosts_verify=("normal", "auto", "ignore"), sshauth="sshauth"),
    "libssh2": dict(_SSH_PARAMETERS, sshauth="sshauth"),
    "unix": {},
    "": {},
}
_SSHAUTH = ("agent", "privkey", "password", "keyboard-interactive")
# A node file of libvirt's test driver: an XML document, nothing else on the engine host.
_TEST_FILE = re.compile(r"/[A-Za-z0-9_.,/+=-]*\.xml")
TEST_DRIVER_HINT = ("the test driver simulates a host for trials and tests; this engine does not allow it "
                    "(virtplane.kvm.engine_database allow_test_driver)")


# Where a URI's file parameters may point: the engine's and the system's key and certificate
# directories, and the engine's own state. ssh writes a host key into its known_hosts file, and
# libvirt reads keys and certificates as root: anywhere else could be any file of the engine host.
URI_FILE_TREES = re.compile(r"(/etc/pki|/etc/virtplane|/etc/ssh|/root/\.ssh|/home/[a-z_][a-z0-9_-]{0,31}/\.ssh"
                            r"|/var/lib/virtplane(-[a-z0-9-]{1,32})?)(/[A-Za-z0-9_.,+=-]+)*")
# userinfo: from after '//' to the last '@' of the authority (a careless password may hold '/' or spaces)
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)([^@]*)@")


def redact_uri(text):
    """``text`` with the credentials of any URI in it masked: what may be shown or stored."""
    if not text:
        return text
    return _USERINFO.sub(lambda m: m.group(1) + _masked_userinfo(m.group(2)) + "@", text)


def _masked_userinfo(userinfo):
    user, colon, _password = userinfo.partition(":")
    return user + ":***" if colon else userinfo


def uri_passwords(value):
    """The passwords of the URIs anywhere in ``value`` (strings, lists, dicts): what must be masked."""
    if isinstance(value, str):
        found = set()
        for match in _USERINFO.finditer(value):
            _user, colon, password = match.group(2).partition(":")
            if colon and password:
                found.add(password)
        for _key, _sep, query_value in (part.partition("=") for part in value.partition("?")[2].split("&")):
            if _key.lower() in ("password", "passwd", "pass") and query_value:
                found.add(query_value)
        return found
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return set().union(*(uri_passwords(v) for v in value)) if value else set()
    return set()


def _shown(uri):
    """A URI for a message: credentials masked, query values left out (they are not repeated)."""
    base, question, query = redact_uri(uri).partition("?")
    if question:
        base += "?" + "&".join(part.partition("=")[0] + ("=..." if "=" in part else "") for part in query.split("&"))
    return shown(base, 120)


def _valid_host(name):
    if not name:
        return False
    try:
        validate_host_name("libvirt_uri", name)
    except ValidationError:
        return False
    return True


def validate_uri(uri, field="libvirt_uri", allow_test_driver=False):
    """Accept the libvirt URIs a host can have; refuse anything else with the reason.

    Only drivers, transports and query parameters the engine knows pass; a URI never carries a
    password (libvirt authenticates with TLS certificates, SSH keys or SASL), and the test driver
    is refused unless the engine allows it.
    """
    if not uri or not isinstance(uri, str):
        raise ValidationError(field, "a libvirt URI is required, e.g. qemu+tls://hv1.example.com/system")
    if _FORBIDDEN.search(uri):
        raise ValidationError(field, "%s contains whitespace, control characters or shell/XML metacharacters"
                              % _shown(uri))
    try:
        parts = urlsplit(uri)
        port = parts.port
        password = parts.password
    except ValueError:
        raise ValidationError(field, "%s is not a valid URI (host or port)" % _shown(uri))
    if password is not None:
        raise ValidationError(field, "%s carries a password: libvirt does not take one from a URI; it authenticates "
                                     "with TLS client certificates (qemu+tls), SSH keys (qemu+ssh) or SASL"
                              % _shown(uri))
    if uri.split(":", 1)[0] != parts.scheme:
        raise ValidationError(field, "%s: write the driver and transport in lower case (e.g. qemu+tls)" % _shown(uri))
    driver, _plus, transport = parts.scheme.partition("+")
    if driver not in DRIVERS:
        raise ValidationError(field, "%s has driver '%s'; supported drivers: %s"
                              % (_shown(uri), driver or "(none)", ", ".join(DRIVERS)))
    if parts.fragment or uri.endswith("#"):
        raise ValidationError(field, "%s has a fragment ('#...'), which libvirt URIs do not have" % _shown(uri))
    if driver == "test":
        _validate_test_uri(uri, parts, field, allow_test_driver)
        return uri
    if transport and transport not in REMOTE_TRANSPORTS + LOCAL_TRANSPORTS:
        raise ValidationError(field, "%s has transport '%s'; supported: %s"
                              % (_shown(uri), transport, ", ".join(REMOTE_TRANSPORTS + LOCAL_TRANSPORTS)))
    if transport in REMOTE_TRANSPORTS:
        if not _valid_host(parts.hostname):
            raise ValidationError(field, "%s uses transport '%s' but names no valid host" % (_shown(uri), transport))
        if port == 0:
            raise ValidationError(field, "%s has an invalid port" % _shown(uri))
        if parts.username is not None and not _USER.fullmatch(parts.username):
            raise ValidationError(field, "%s names an invalid user" % _shown(uri))
    elif parts.netloc:
        raise ValidationError(field, "%s names host '%s' without a transport (use %s+tcp, %s+tls or %s+ssh)"
                              % (_shown(uri), parts.netloc, driver, driver, driver))
    if parts.path != "/system":
        hint = (": a session libvirtd runs as one user, without bridges, shared storage or migration"
                if parts.path == "/session" else "")
        raise ValidationError(field, "%s must end in /system%s" % (_shown(uri), hint))
    _validate_parameters(uri, parts, transport, field)
    return uri


def _validate_test_uri(uri, parts, field, allow_test_driver):
    if not allow_test_driver:
        raise ValidationError(field, "%s uses libvirt's test driver: %s" % (_shown(uri), TEST_DRIVER_HINT))
    if parts.netloc or parts.query or uri.endswith("?"):
        raise ValidationError(field, "%s: the test driver takes test:///default or the path of a node XML file, "
                                     "with no host and no parameters" % _shown(uri))
    if parts.path != "/default" and not (_TEST_FILE.fullmatch(parts.path)
                                         and posixpath.normpath(parts.path) == parts.path):
        raise ValidationError(field, "%s: the test driver takes test:///default or the absolute, normalized path of "
                                     "a node XML file (ending in .xml)" % _shown(uri))


def _validate_parameters(uri, parts, transport, field):
    accepted = PARAMETERS[transport]
    seen = set()
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        kind = accepted.get(key)
        if kind is None:
            raise ValidationError(field, "%s has query parameter %s, which the engine does not pass to libvirt "
                                         "(accepted%s: %s)" % (_shown(uri), shown(key), " for " + transport
                                                               if transport else "", ", ".join(sorted(accepted))
                                                               or "none"))
        if key in seen:
            raise ValidationError(field, "%s gives query parameter '%s' twice" % (_shown(uri), key))
        seen.add(key)
        if kind == "path":
            good = bool(URI_FILE_TREES.fullmatch(value)) and posixpath.normpath(value) == value
        elif kind == "flag":
            good = value in ("0", "1")
        elif kind == "sshauth":
            good = bool(value) and all(method in _SSHAUTH for method in value.split(","))
        else:
            good = value in kind
        if not good:
            hint = (" (a path under /etc/pki, /etc/virtplane, /etc/ssh, ~/.ssh or /var/lib/virtplane)"
                    if kind == "path" else "")
            raise ValidationError(field, "%s has an invalid value for query parameter '%s'%s"
                                  % (_shown(uri), key, hint))


# libxml2 reports a parse error with the offending line of the document: for a file, its content.
_XML_DETAIL = re.compile(r"(.*?):(\d+): ")
_MESSAGE_MAX = 400


def safe_message(text, code=None):
    """libvirt's error text as it may reach users, events and the database.

    One line; an XML parse error says where, never what the document holds; no URI password.
    """
    text = (text or "").strip()
    if libvirt is not None and code == getattr(libvirt, "VIR_ERR_XML_DETAIL", 35):
        where = _XML_DETAIL.match(text)
        text = ("cannot parse the XML document %s (line %s)" % (where.group(1), where.group(2)) if where
                else "cannot parse an XML document")
    line = text.splitlines()[0].strip() if text else ""
    line = redact_uri(line)
    return line if len(line) <= _MESSAGE_MAX else line[:_MESSAGE_MAX] + "..."


def _message(exc):
    if libvirt is not None and isinstance(exc, libvirt.libvirtError):
        return safe_message(exc.get_error_message() or str(exc), exc.get_error_code())
    return safe_message(str(exc))


def translated(missing=(), reason=None):
    """The one translation of libvirt's errors: a decorated call raises HypervisorError with libvirt's
    words made safe (``safe_message``), or returns None when the error code is one of ``missing``
    (names of ``VIR_ERR_*`` constants: the object does not exist). ``reason(exc)`` may word it.
    """
    def decorate(function):
        @functools.wraps(function)
        def call(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() in [getattr(libvirt, code, None) for code in missing]:
                    return None
                raise HypervisorError(reason(exc) if reason else _message(exc))
        return call
    return decorate


def open_connection(uri, timeout=15, allow_test_driver=False, readonly=False):
    """Open a libvirt connection, giving up after ``timeout`` seconds.

    The URI is checked again here, not only where it was typed: a row written before a rule
    existed (or by hand) never reaches libvirt unchecked. libvirt's own connect can block for
    minutes on an unreachable TCP address; the attempt runs in a daemon thread so that a dead
    host costs at most ``timeout``.
    """
    if libvirt is None:
        raise HypervisorError("The Python library libvirt-python is not installed")
    try:
        validate_uri(uri, allow_test_driver=allow_test_driver)
    except ValidationError as exc:
        raise HypervisorError("libvirt URI not accepted: %s" % exc.cause)
    outcome = {}

    def attempt():
        try:
            outcome["conn"] = libvirt.openReadOnly(uri) if readonly else libvirt.open(uri)
        except Exception as exc:  # handed to the caller below, translated there
            outcome["error"] = exc

    worker = threading.Thread(target=attempt, name="libvirt-connect", daemon=True)
    worker.start()
    worker.join(max(timeout, 1))
    shown_uri = redact_uri(uri)
    if worker.is_alive():
        raise HypervisorError("libvirt at %s did not answer within %d s" % (shown_uri, timeout))
    if "error" in outcome:
        error = outcome["error"]
        if uri.startswith("test:") and uri != "test:///default":
            # whatever the file holds stays out of the message: only that it is no node file
            raise HypervisorError("cannot connect to libvirt at %s: the test driver cannot read a node XML "
                                  "document there" % shown_uri)
        raise HypervisorError("cannot connect to libvirt at %s: %s" % (shown_uri, _message(error)))
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
        # what the CPU offers beyond its model: a guest started with a feature cannot move to a host without it
        "cpu_features": sorted({f.get("name") for f in cpu.findall("feature") if f.get("name")}) if cpu is not None
        else [],
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
    facts = _read_facts(conn)
    facts["domain_type"] = choose_domain_type(facts["hypervisor_type"], facts.pop("domain_types"), domain_type)
    facts["cpu_models"] = _cpu_models(conn, facts["cpu_arch"], facts["domain_type"])
    return facts


@translated(missing=("VIR_ERR_NO_SUPPORT",))
def cpu_times(conn):
    """(busy, total) nanoseconds of all the host's CPUs since it booted; None where the driver cannot tell."""
    stats = conn.getCPUStats(libvirt.VIR_NODE_CPU_STATS_ALL_CPUS)
    total = sum(int(v) for v in stats.values())
    idle = int(stats.get("idle", 0)) + int(stats.get("iowait", 0))
    return (total - idle, total) if total else None


@translated(missing=("VIR_ERR_NO_SUPPORT", "VIR_ERR_OPERATION_DENIED"))
def _cpu_models(conn, arch, domain_type):
    """The named CPU models a guest of ``domain_type`` can be given on this host; None: libvirt cannot tell
    (a driver without domain capabilities, such as the test driver, or a read-only connection)."""
    return parse_cpu_models(conn.getDomainCapabilities(None, arch, None, domain_type, 0))


def parse_cpu_models(domcaps_xml):
    """The models of the ``custom`` CPU mode that libvirt marks usable (pure: unit-testable without libvirt).
    ``usable='unknown'`` counts as not usable: a guest started with such a model may not get it."""
    root = ET.fromstring(domcaps_xml)
    models = set()
    for mode in root.findall("cpu/mode"):
        if mode.get("name") == "custom" and mode.get("supported") == "yes":
            models.update(m.text.strip() for m in mode.findall("model") if m.text and m.get("usable") == "yes")
    return sorted(models)


@translated()
def _read_facts(conn):
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
    return facts
