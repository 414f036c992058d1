# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How a host is fenced (the host module's ``fence`` and ``storage_leases``), and fencing by hand
(``state: fenced``).

The fence agent's settings are checked before anything is written: the agent must run on the engine host (the
fence-agents program installed), and the power controller must answer a status query with the credentials
given — in check mode too, since that query changes nothing. A wrong password is reported as the agent says
it, with the password masked; it never reaches a result, an event or the database's error messages (the
secret is kept in a table of its own that no query of host rows reads).
"""

from __future__ import annotations

import re
import unicodedata

from ansible_collections.virtplane.kvm.plugins.module_utils import _choices
from ansible_collections.virtplane.kvm.plugins.module_utils._errors import (
    ConflictError,
    FenceError,
    NotFoundError,
    ValidationError,
)
from ansible_collections.virtplane.kvm.plugins.module_utils._validation import (
    shown,
    validate_host_name,
    validate_name,
    validate_path,
    validate_pattern,
    validate_range,
)
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _db, _events
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _hosts as host_rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _monitor as rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine._db import LOCK_DATACENTER
from ansible_collections.virtplane.kvm.plugins.module_utils.fence import _agents
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _host, _monitor
from ansible_collections.virtplane.kvm.plugins.module_utils.services._common import Outcome

_USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_SYSTEMS_URI = re.compile(r"/[A-Za-z0-9/._-]{0,255}")
_PRIVILEGES = ("user", "operator", "administrator")


def validate(fence):
    """The ``fence`` option, checked whole: (agent or None, {address, port, username, options}, secret)."""
    if fence is None:
        return None
    agent = fence.get("agent") or "none"
    if agent not in _choices.FENCE_AGENTS:
        raise ValidationError("fence.agent", "%s is not one of %s" % (shown(agent), ", ".join(_choices.FENCE_AGENTS)))
    if agent == "none":
        extra = sorted(k for k in ("address", "port", "username", "password", "options") if fence.get(k))
        if extra:
            raise ValidationError("fence.%s" % extra[0], "a host without a fence agent takes no %s" % extra[0])
        return None, {}, None
    if not fence.get("address"):
        raise ValidationError("fence.address", "the %s agent needs the address of the host's power controller"
                              % agent if agent != "ssh" else "the ssh agent needs the host's address")
    address = validate_host_name("fence.address", fence["address"])
    port = fence.get("port")
    if port is not None:
        validate_range("fence.port", port, 1, 65535)
    username = fence.get("username")
    if username is not None:
        validate_pattern("fence.username", username, _USER, "a user name (letters, digits, '.', '_', '@', '-')")
    secret = fence.get("password")
    if secret is not None:
        if not isinstance(secret, str) or not secret or len(secret) > 1024 or any(
                unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in secret):
            raise ValidationError("fence.password", "must be text of 1 to 1024 characters without control "
                                  "characters or line breaks")
        if agent == "ssh":
            raise ValidationError("fence.password", "the ssh agent logs in with a key (fence.options.identity_file),"
                                  " never a password")
    options = _options(agent, fence.get("options") or {})
    if agent == "redfish" and not options.get("systems_uri"):
        # fence_redfish would take the service's last system, whichever host that is
        raise ValidationError("fence.options.systems_uri", "the redfish agent needs the path of the host's system "
                              "on the Redfish service (e.g. /redfish/v1/Systems/System.Embedded.1), or it might "
                              "power off another system of the same service")
    if agent == "ipmilan" and options.get("cipher") is not None and options.get("lanplus") is False:
        raise ValidationError("fence.options.cipher", "a cipher suite is IPMI 2.0's (lanplus), which lanplus: false "
                              "turns off")
    missing = _agents.installed(agent)
    if missing:
        raise ValidationError("fence.agent", "%s cannot fence from here: %s" % (agent, missing))
    config = {"address": address, "port": port or _agents.DEFAULT_PORTS[agent], "username": username,
              "options": options}
    return agent, config, secret or None


def _options(agent, options):
    allowed = _agents.AGENT_OPTIONS[agent]
    for key in sorted(options):
        if key not in allowed:
            raise ValidationError("fence.options.%s" % key, "the %s agent takes %s" % (agent, ", ".join(allowed)))
    checked = {}
    for key, value in options.items():
        field = "fence.options.%s" % key
        if key in ("lanplus", "ssl_insecure"):
            if not isinstance(value, bool):
                raise ValidationError(field, "%s is not true or false" % shown(value))
        elif key == "privlvl":
            if value not in _PRIVILEGES:
                raise ValidationError(field, "%s is not one of %s" % (shown(value), ", ".join(_PRIVILEGES)))
        elif key == "cipher":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 17:
                raise ValidationError(field, "%s is no IPMI 2.0 cipher suite (0 to 17)" % shown(value))
        elif key == "systems_uri":
            validate_pattern(field, value, _SYSTEMS_URI, "an absolute path on the Redfish service")
        elif key == "system":
            validate_name(field, value)
        elif key == "identity_file":
            validate_path(field, value)
            if not _agents.readable_file(value):
                raise ValidationError(field, "%s is no readable file on the engine host" % shown(value))
        checked[key] = value
    return checked


def apply(engine, spec, check_mode):
    """The host's fencing and storage leases as ``spec`` says: an Outcome (before/after without the secret).

    Also the check made before a host is registered or changed (``check_mode``): the settings are valid and the
    power controller answers with the credentials given, so a wrong password stops the task before anything."""
    desired = validate(spec.fence)
    with engine.transaction() as cur:
        row = host_rows.find(cur, spec.name)
        secret = rows.secret(cur, row["id"]) if row is not None else None
    row = row or {"name": spec.name, "fence_agent": None, "fence_options": {}, "storage_leases": False, "id": None}
    before = {"fence": _host.fence_view(row), "storage_leases": row["storage_leases"]}
    after = dict(before)
    changes, actions = {}, []
    if desired is not None:
        agent, config, new_secret = desired
        if (agent or None) != row["fence_agent"] or (config if agent else {}) != (row["fence_options"] or {}) \
                or (new_secret or None) != (secret or None):
            if agent:
                try:  # the credentials answer, before anything is written (a status query changes nothing)
                    _agents.agent(agent, row["name"], config, new_secret).status()
                except FenceError as exc:
                    raise ConflictError("Cannot set the fencing of host %s: %s" % (row["name"], exc))
            changes["fence"] = (agent, config if agent else {}, new_secret)
            after["fence"] = _host.fence_view({"fence_agent": agent, "fence_options": config})
            actions.append("fence agent %s" % (agent or "none") if (agent or None) != row["fence_agent"] else
                           "fence settings changed")
    if spec.storage_leases is not None and spec.storage_leases != row["storage_leases"]:
        changes["storage_leases"] = spec.storage_leases
        after["storage_leases"] = spec.storage_leases
        actions.append("storage leases %s" % ("on" if spec.storage_leases else "off"))
    if not changes:
        return Outcome(False, before, after, None, [])
    if not check_mode:
        with engine.transaction() as cur:
            engine.lock(cur, LOCK_DATACENTER, row["datacenter"])
            if "fence" in changes:
                agent, config, new_secret = changes["fence"]
                rows.set_fencing(cur, row["id"], agent, config, new_secret)
            if "storage_leases" in changes:
                host_rows.update(cur, row["id"], {"storage_leases": changes["storage_leases"]})
            _events.record(cur, "HOST_FENCING_CHANGED", "Host %s: %s" % (row["name"], "; ".join(actions)),
                           object_type="host", object_id=row["id"], object_name=row["name"], host=row["name"],
                           details={"fence": after["fence"], "storage_leases": after["storage_leases"]})
    return Outcome(True, before, after, None, actions)


def fence_now(engine, spec, check_mode):
    """``state: fenced``: the host powered off by its agent, recorded fenced; its HA VMs restart elsewhere (one
    monitor pass), the others are Down with the reason. A host its agent reports off and that is recorded
    fenced is left as it is."""
    with engine.transaction() as cur:
        row = host_rows.find(cur, spec.name)
        if row is None:
            raise NotFoundError("host", spec.name, "fence it")
        secret = rows.secret(cur, row["id"])
        hosts = {h["name"]: h for h in rows.hosts(cur)}
    if row["fence_agent"] not in _agents.POWER_AGENTS:
        raise ConflictError("Cannot fence host %s: %s" % (
            row["name"], "it has no fence agent (set fence.agent)" if not row["fence_agent"] else
            "its ssh agent restarts libvirtd, it cannot power the host off"))
    host = hosts.get(row["name"], dict(row, resilience_policy=None))
    agent = _agents.agent(row["fence_agent"], row["name"], dict(row["fence_options"] or {}), secret)
    try:
        power = agent.status()
    except FenceError as exc:
        raise ConflictError("Cannot fence host %s: %s" % (row["name"], exc))
    before = {"status": row["status"], "power": power, "fenced": row["fenced_at"] is not None}
    if power == "off" and row["fenced_at"] is not None:
        return Outcome(False, before, before, {"name": row["name"], "status": row["status"], "power": "off"}, [])
    if check_mode:
        return Outcome(True, before, {"status": "NonResponsive", "power": "off", "fenced": True},
                       {"name": row["name"], "status": "NonResponsive", "power": "off"},
                       ["power off host %s through its %s agent" % (row["name"], row["fence_agent"])])
    actions = ["power off host %s through its %s agent" % (row["name"], row["fence_agent"])]
    monitor = _monitor.Monitor(engine, None, probe_timeout=min(spec.timeout, 120))
    try:
        # under the pass lock: no pass that asked the host before its power went off records it Up after
        with monitor.holding_pass(max(spec.wait_timeout, 30)):
            try:
                _restart, down = _monitor.fence(engine, host, "run %s" % _events.actor())
            except FenceError as exc:
                raise ConflictError("Cannot fence host %s: %s" % (row["name"], exc))
            actions += ["VM %s Down" % name for name in down]
            try:  # the HA restarts; the fence stands whatever they do (the monitor retries them)
                result = monitor.pass_held()
                actions += [a for a in result["actions"] if a.startswith("VM ")]
            except _db.DatabaseError:
                raise
            except Exception as exc:  # the host is off and recorded so: the task reports the restarts' trouble
                result = {"hosts": {}, "restarting": []}
                actions.append("HA restarts left to the monitor: %s" % str(exc).splitlines()[0])
    finally:
        monitor.probes.close()
    return Outcome(True, before, {"status": "NonResponsive", "power": "off", "fenced": True},
                   {"name": row["name"], "status": result["hosts"].get(row["name"], "NonResponsive"), "power": "off",
                    "restarting": result["restarting"]}, actions)


def refuse_with_state(spec):
    settings = spec.fence is not None or spec.storage_leases is not None
    if spec.state in ("maintenance", "active", "fenced", "absent") and settings:
        raise ValidationError("state", "%s takes a host as it is; set fence and storage_leases with state present"
                              % spec.state)
