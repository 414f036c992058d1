# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fence agents: how the engine powers off a host it cannot reach, and learns that it is off.

A host proven off (its power controller says so after a power-off) runs nothing any more: its HA VMs may
start elsewhere. Agents:

- ``ipmilan``, ``redfish``: the standard fence-agents programs (``fence_ipmilan``, ``fence_redfish``) where
  they are installed on the engine host. Their options go on standard input, never on their command line
  (fence_ipmilan hands the password on to ipmitool's ``-P``, which hides it from the process list where the
  system lets it).
- ``lab``: the lab's power controller, which speaks the part of Redfish a fence agent uses (a system's
  ``PowerState``, ``ComputerSystem.Reset`` with ``ForceOff``) over HTTP with a password; it kills the lab
  host's processes.
- ``ssh``: a soft fence — libvirtd restarted over SSH. It brings back a host whose libvirtd hung; it never
  proves a host dead (its power is not controlled), so it is no ground for restarting its VMs elsewhere.

This layer knows neither the engine nor libvirt. Every message is made from what the agent says with the
secret masked, so a credential never reaches a result, an event or a log.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import subprocess
import time

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import FenceError

POWER_AGENTS = ("ipmilan", "redfish", "lab")  # agents that prove a host off
PROGRAMS = {"ipmilan": "fence_ipmilan", "redfish": "fence_redfish"}
PACKAGES = {"ipmilan": "fence-agents (Debian) or fence-agents-ipmilan (EL)",
            "redfish": "fence-agents (Debian) or fence-agents-redfish (EL)"}
DEFAULT_PORTS = {"ipmilan": 623, "redfish": 443, "lab": 3143, "ssh": 22}
# the options each agent takes beyond address, port, username and password
AGENT_OPTIONS = {"ipmilan": ("lanplus", "privlvl", "cipher"), "redfish": ("systems_uri", "ssl_insecure"),
                 "lab": ("system",), "ssh": ("identity_file",)}
OFF_TIMEOUT = 30  # seconds a power-off may take to be confirmed


def _masked(text, secret):
    """What an agent said, on one line, the secret masked first (before any line is split or cut)."""
    text = text or ""
    if secret:
        text = text.replace(secret, "********")
    text = " / ".join(line.strip() for line in text.splitlines() if line.strip())
    return text[:300]


class Agent:
    """One host's fence agent: ``status()`` says 'on', 'off' (or 'unknown'); ``off()`` returns once the host is
    confirmed off; ``soft()`` recovers a host without powering it off (agents that can)."""

    proves_death = True

    def __init__(self, agent, host, address, port=None, username=None, secret=None, options=None, timeout=10):
        self.agent, self.host, self.address = agent, host, address
        self.port = port or DEFAULT_PORTS[agent]
        self.username, self.secret = username, secret
        self.options = dict(options or {})
        self.timeout = timeout

    @property
    def where(self):
        return "%s agent at %s:%d" % (self.agent, self.address, self.port)

    def fail(self, what):
        return FenceError("Fence agent of host %s (%s): %s" % (self.host, self.where, what))

    def off(self):
        self._off()
        deadline = time.monotonic() + OFF_TIMEOUT
        while True:
            state = self.status()
            if state == "off":
                return
            if time.monotonic() > deadline:
                raise self.fail("the host was told to power off, but is still %s after %d s" % (state, OFF_TIMEOUT))
            time.sleep(0.5)

    def soft(self):
        raise self.fail("this agent has no soft fence")

    def status(self):
        raise NotImplementedError

    def _off(self):
        raise NotImplementedError


class LabAgent(Agent):
    """The lab's power controller: Redfish's system power over plain HTTP, HTTP basic authentication."""

    def _request(self, path, body=None):
        system = self.options.get("system") or self.host
        token = base64.b64encode(("%s:%s" % (self.username or "root", self.secret or "")).encode()).decode()
        headers = {"Authorization": "Basic " + token, "Content-Type": "application/json"}
        connection = http.client.HTTPConnection(self.address, self.port, timeout=self.timeout)
        try:
            connection.request("GET" if body is None else "POST", "/redfish/v1/Systems/%s%s" % (system, path),
                               body=None if body is None else json.dumps(body), headers=headers)
            response = connection.getresponse()
            text = response.read().decode("utf-8", "replace")
        except (OSError, http.client.HTTPException) as exc:
            said = _masked(str(exc) or exc.__class__.__name__, self.secret)
            raise self.fail("no power controller answers: %s" % said)
        finally:
            connection.close()
        if response.status == 401:
            raise self.fail("the power controller refused the credentials (HTTP 401)")
        if response.status == 404:
            raise self.fail("the power controller knows no system %s (HTTP 404)" % system)
        if response.status >= 300:
            raise self.fail("the power controller answered HTTP %d" % response.status)
        try:
            answer = json.loads(text) if text.strip() else {}
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise self.fail("the power controller's answer is no JSON object")
        return answer

    def status(self):
        state = str(self._request("").get("PowerState", "")).lower()
        return state if state in ("on", "off") else "unknown"

    def _off(self):
        self._request("/Actions/ComputerSystem.Reset", {"ResetType": "ForceOff"})


class ProgramAgent(Agent):
    """fence_ipmilan / fence_redfish, options on standard input (fence-agents' own interface)."""

    def program(self):
        path = shutil.which(PROGRAMS[self.agent])
        if path is None:
            raise self.fail("the program %s is not installed on the engine host (package %s)"
                            % (PROGRAMS[self.agent], PACKAGES[self.agent]))
        return path

    def _run(self, action):
        lines = ["action=%s" % action, "ip=%s" % self.address, "ipport=%d" % self.port,
                 "login_timeout=%d" % self.timeout]
        if self.username:
            lines.append("username=%s" % self.username)
        if self.secret:
            lines.append("password=%s" % self.secret)
        if self.agent == "ipmilan":
            # the ipmitool the check found, not fence_ipmilan's default path
            lines.append("ipmitool_path=%s" % (shutil.which("ipmitool") or "ipmitool"))
            if self.options.get("lanplus", True):
                lines.append("lanplus=1")
            if self.options.get("privlvl"):
                lines.append("privlvl=%s" % self.options["privlvl"])
            if self.options.get("cipher") is not None:
                lines.append("cipher=%d" % self.options["cipher"])
        else:
            if self.options.get("systems_uri"):
                lines.append("systems_uri=%s" % self.options["systems_uri"])
            if self.options.get("ssl_insecure"):
                lines.append("ssl_insecure=1")
        # a status query is bounded by the login timeout; a power-off waits for the power too (fence-agents'
        # power_timeout, 20 s)
        limit = self.timeout + (25 if action == "off" else 5)
        try:
            # the programs' own Python warnings are no words of the agent's
            done = subprocess.run([self.program()], input="\n".join(lines) + "\n", capture_output=True, text=True,
                                  timeout=limit, check=False,
                                  env=dict(os.environ, PYTHONWARNINGS="ignore::DeprecationWarning"))
        except subprocess.TimeoutExpired:
            raise self.fail("%s did not answer within %d s" % (PROGRAMS[self.agent], limit))
        except (OSError, ValueError) as exc:
            raise self.fail("%s cannot run: %s" % (PROGRAMS[self.agent], _masked(str(exc), self.secret)))
        return done.returncode, _masked(done.stderr or done.stdout, self.secret)

    def status(self):
        code, said = self._run("status")
        if code == 0:
            return "on"
        if code == 2:
            return "off"
        raise self.fail("status failed: %s" % (said or "exit status %d" % code))

    def _off(self):
        code, said = self._run("off")
        if code != 0:
            raise self.fail("power-off failed: %s" % (said or "exit status %d" % code))


class SshAgent(Agent):
    """The soft fence: libvirtd restarted over SSH (systemd, or the hypervisor role's virtplane-service)."""

    proves_death = False

    def _ssh(self, command):
        argv = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=%d" % self.timeout,
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                "-p", str(self.port)]
        if self.options.get("identity_file"):
            argv += ["-i", self.options["identity_file"]]
        argv += ["%s@%s" % (self.username or "root", self.address), command]
        if shutil.which("ssh") is None:
            raise self.fail("the program ssh is not installed on the engine host (package openssh-client)")
        limit = self.timeout + 20  # the login, then a libvirtd restart
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=limit, check=False,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise self.fail("ssh did not finish within %d s" % limit)
        except (OSError, ValueError) as exc:
            raise self.fail("ssh cannot run: %s" % _masked(str(exc), self.secret))
        if done.returncode != 0:
            raise self.fail("ssh failed: %s" % (_masked(done.stderr, self.secret) or "exit status %d"
                                                % done.returncode))
        return done.stdout

    def status(self):
        self._ssh("true")
        return "unknown"  # the host answers; whether it runs VMs is libvirt's to say

    def soft(self):
        self._ssh("if [ -d /run/systemd/system ]; then systemctl restart libvirtd; "
                  "else virtplane-service restart libvirtd || /usr/local/sbin/virtplane-service restart libvirtd; fi")

    def off(self):
        raise self.fail("an SSH soft fence restarts libvirtd; it cannot power the host off")


def agent(name, host, config, secret=None, timeout=10):
    """The agent named ``name`` for ``host`` with ``config`` (address, port, username, options)."""
    kind = {"lab": LabAgent, "ssh": SshAgent, "ipmilan": ProgramAgent, "redfish": ProgramAgent}[name]
    return kind(name, host, config.get("address"), config.get("port"), config.get("username"), secret,
                config.get("options"), timeout)


def installed(name):
    """Why the agent ``name`` cannot run on this (the engine) host, or None."""
    if name in PROGRAMS and shutil.which(PROGRAMS[name]) is None:
        return "the program %s is not installed on the engine host (package %s)" % (PROGRAMS[name], PACKAGES[name])
    if name == "ipmilan" and shutil.which("ipmitool") is None:
        return "the program ipmitool, which fence_ipmilan runs, is not installed on the engine host (package ipmitool)"
    if name == "ssh" and shutil.which("ssh") is None:
        return "the program ssh is not installed on the engine host (package openssh-client)"
    return None


def readable_file(path):
    return os.path.isfile(path) and os.access(path, os.R_OK)
