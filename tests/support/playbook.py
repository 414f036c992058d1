"""Run modules the way users do: ansible-playbook on a generated play against localhost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(ROOT, "build", "collections")
CALLBACKS = os.path.join(ROOT, "tests", "support", "callback")
BIN = os.path.dirname(sys.executable)


def ensure_collection_link():
    """The collection must be importable as ansible_collections.virtplane.kvm (make does the same)."""
    link = os.path.join(COLLECTIONS, "ansible_collections", "virtplane", "kvm")
    if not os.path.exists(link):
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(ROOT, link)
    return COLLECTIONS


class PlaybookRun:
    def __init__(self, rc, results, output):
        self.rc = rc
        self.results = results
        self.output = output

    def __getitem__(self, task_name):
        """The result of the task of this name (the last one, if it ran more than once)."""
        found = [r["result"] for r in self.results if r["task"] == task_name]
        if not found:
            raise KeyError("task %r did not run; output:\n%s" % (task_name, self.output[-3000:]))
        return found[-1]

    @property
    def changed_tasks(self):
        return [r["task"] for r in self.results if r["result"].get("changed")]


def run_play(tasks, engine=None, check=False, diff=False, extra_env=None):
    """Run ``tasks`` in one play on localhost; ``engine`` becomes module_defaults of the engine group."""
    play = {"hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": tasks,
            "vars": {"ansible_python_interpreter": sys.executable}}
    return run_plays([play], engine=engine, check=check, diff=diff, extra_env=extra_env)


def run_plays(plays, engine=None, check=False, diff=False, extra_env=None, inventory=None, extra_vars=None,
              limit=None):
    """Run a playbook made of ``plays`` (with ``inventory``, a path, or localhost alone)."""
    return start_plays(plays, engine, check, diff, extra_env, inventory, extra_vars, limit).wait()


class StartedPlaybook:
    """An ansible-playbook running in a process group of its own: wait for it, or kill it whole."""

    def __init__(self, proc, tmp, results_file):
        self.proc = proc
        self._tmp = tmp
        self._results_file = results_file

    def kill(self):
        """SIGKILL to the playbook and every process under it (its modules run in sessions of their own,
        so the process group is not enough): a run that dies, as when its machine goes away."""
        for pid in [self.proc.pid] + _descendants(self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        self._tmp.cleanup()

    def wait(self, timeout=None):
        output, _errors = self.proc.communicate(timeout=timeout)
        results = []
        if os.path.exists(self._results_file):
            with open(self._results_file) as handle:
                results = json.load(handle)
        self._tmp.cleanup()
        return PlaybookRun(self.proc.returncode, results, output)


def _descendants(root):
    """Every process below ``root``, from /proc (children first found, grandchildren after)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as handle:
                    parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = [], [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        found.extend(children)
        frontier = children
    return found


def start_plays(plays, engine=None, check=False, diff=False, extra_env=None, inventory=None, extra_vars=None,
                limit=None):
    """Start a playbook made of ``plays`` and return at once (``run_plays`` waits for it)."""
    if engine is not None:
        for play in plays:
            play.setdefault("module_defaults", {})["group/virtplane.kvm.engine"] = {"engine": engine}
    ensure_collection_link()
    tmp = tempfile.TemporaryDirectory(prefix="virtplane-play-")
    playbook = os.path.join(tmp.name, "play.yml")
    results_file = os.path.join(tmp.name, "results.json")
    with open(playbook, "w") as handle:
        json.dump(plays, handle)  # JSON is YAML
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_CALLBACKS_ENABLED="record_results",
               ANSIBLE_CALLBACK_PLUGINS=CALLBACKS, VIRTPLANE_TEST_RESULTS=results_file,
               ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
               PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    env.update(extra_env or {})
    argv = [os.path.join(BIN, "ansible-playbook"), playbook, "-i", inventory or "localhost,"]
    if check:
        argv.append("--check")
    if diff:
        argv.append("--diff")
    if extra_vars:
        argv.extend(["-e", json.dumps(extra_vars)])
    if limit:
        argv.extend(["--limit", limit])
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    return StartedPlaybook(proc, tmp, results_file)
