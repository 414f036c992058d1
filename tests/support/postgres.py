"""A throwaway PostgreSQL server for the tests: initdb + pg_ctl in a temporary directory.

It listens only on a unix socket in its own directory (no TCP port, so nothing collides with
another server or another test run), requires SCRAM passwords like a production server, and is
removed when the session ends. Directories left by a killed run are removed on the next start.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time

PREFIX = "virtplane-test-pg-"


def _bindir():
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if candidates:
        return os.path.dirname(candidates[-1])
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(found)
    raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) are not installed: run `make deps`")


def _as_server_user(argv):
    """PostgreSQL refuses to run as root: run as the 'postgres' system user then."""
    if os.getuid() == 0:
        return ["runuser", "-u", "postgres", "--"] + argv
    return argv


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers():
    """Stop servers and remove directories of earlier runs that were killed before cleaning up.

    A directory whose owner (the test process that made it) lives is never touched, whatever its server
    is doing: while initdb runs, postmaster.pid holds the *negative* PID of its bootstrap backend, which
    no signal test can reach (kill(-pid) names a process group).
    """
    for directory in glob.glob(os.path.join(tempfile.gettempdir(), PREFIX + "*")):
        if not _is_stale(directory):
            continue  # a concurrent run's (another pytest-xdist worker's, or another session's)
        pidfile = os.path.join(directory, "data", "postmaster.pid")
        try:
            with open(pidfile) as handle:
                pid = abs(int(handle.readline().strip()))
        except (OSError, ValueError):
            pid = None
        if pid and _pid_alive(pid):
            cmdline = ""
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as handle:
                    cmdline = handle.read().decode(errors="replace")
            except OSError:
                pass
            if directory not in cmdline:
                continue  # not ours any more (pid reused): leave both alone
            os.kill(pid, signal.SIGQUIT)
        shutil.rmtree(directory, ignore_errors=True)


def _is_stale(directory):
    owner = os.path.join(directory, "owner.pid")
    try:
        with open(owner) as handle:
            return not _pid_alive(int(handle.read().strip()))
    except (OSError, ValueError):
        # no owner written yet: stale only once it is old enough not to be a server being made now
        try:
            return time.time() - os.stat(directory).st_mtime > 120
        except OSError:
            return False


class PostgresServer:
    superuser = "postgres"

    def __init__(self):
        self.bindir = _bindir()
        self.root = tempfile.mkdtemp(prefix=PREFIX)
        with open(os.path.join(self.root, "owner.pid"), "w") as handle:
            handle.write(str(os.getpid()))
        self.data = os.path.join(self.root, "data")
        self.socket_dir = self.root
        self.port = 5432
        self.superuser_password = secrets.token_urlsafe(18)
        if os.getuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.root, account.pw_uid, account.pw_gid)
        os.chmod(self.root, 0o755)

    def _run(self, *argv):
        subprocess.run(_as_server_user([os.path.join(self.bindir, argv[0])] + list(argv[1:])), check=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd="/")

    def start(self):
        pwfile = os.path.join(self.root, "pwfile")
        with open(pwfile, "w") as handle:
            handle.write(self.superuser_password)
        if os.getuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        try:
            self._run("initdb", "-D", self.data, "-U", self.superuser, "--auth=scram-sha-256",
                      "--pwfile", pwfile, "-E", "UTF8", "--no-sync")
        finally:
            os.unlink(pwfile)
        options = "-c listen_addresses='' -k %s -p %d -c fsync=off -c max_connections=60" % (self.socket_dir, self.port)
        self._run("pg_ctl", "-D", self.data, "-o", options, "-l", os.path.join(self.root, "server.log"),
                  "-w", "-t", "60", "start")
        return self

    def stop(self):
        try:
            self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)

    def superuser_login(self, database="postgres"):
        return dict(host=self.socket_dir, port=self.port, user=self.superuser, password=self.superuser_password,
                    database=database)
