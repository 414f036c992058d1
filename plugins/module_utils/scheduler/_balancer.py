# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The balancer: the migrations a cluster's policy proposes for its current state (pure: no DB, no libvirt).

``balance(scheduler, running, params)`` looks at the snapshot a ``Scheduler`` holds and the cluster's
running VMs (``running``: placement requests with the ``host`` each runs on and what it holds there)
and returns ``(migrations, problems)``: ``migrations`` is a list of ``{vm, from, to, reason}``, each
destination chosen by the scheduler's own filters and weights with the moves before it already made
(so that two proposals never fill one host twice); ``problems`` lists ``{host, reason}`` of what the
policy would change but cannot.

In this order, as oVirt's balancing does, one step per host and round:

1. every policy: a VM whose host no longer passes the hard filters for it — an affinity group made or
   changed after it started, its pinning, a host in maintenance or whose capacity was lowered — moves
   to a host that does;
2. ``evenly_distributed`` and ``power_saving``: a host whose CPU load is above ``high_utilization`` gives
   one VM (the smallest that fits elsewhere) to a host below it;
3. ``power_saving``: the least loaded host with VMs below ``low_utilization`` gives all of them to hosts
   between the thresholds, so that it can be switched off (all or none);
4. ``vm_evenly_distributed``: the host with the most VMs, above ``high_vm_count`` and ``migration_threshold``
   or more above the host with the fewest, gives one VM to it.

A host counts as above (below) a threshold when its load stayed there for the policy's ``duration_minutes``:
``sustained`` gives each host's lowest and highest load over that time, from the engine's history; a host
whose history does not cover it is left alone. (Without ``sustained``, each host's last load is taken as
held.) Destinations are chosen by the last load. The balancer has no VM's own CPU share, so a host gives
one VM per round and the next round sees the load that follows.
"""

from __future__ import annotations

from ansible_collections.virtplane.kvm.plugins.module_utils.scheduler._policies import normalize_parameters

# reasons of the hard filters that say a VM's current host is wrong for it (capacity it already holds aside)
_PLACEMENT_REASONS = ("affinity group", "the VM is pinned", "host is ")


def balance(scheduler, running, params=None, sustained=None):
    policy = scheduler.policy
    params = normalize_parameters(policy, params or {})
    vms = sorted((dict(v) for v in running if v.get("host") in scheduler.by_name), key=lambda v: v["name"])
    state = _State(scheduler, vms, sustained, params.get("duration_minutes"))
    _enforce(state)
    if policy in ("evenly_distributed", "power_saving"):
        _over(state, params["high_utilization"])
    if policy == "power_saving":
        _under(state, params["low_utilization"], params["high_utilization"])
    if policy == "vm_evenly_distributed":
        _crowded(state, params["high_vm_count"], params["migration_threshold"])
    return state.migrations, state.problems


class _State:
    def __init__(self, scheduler, vms, sustained, minutes):
        self.scheduler = scheduler
        self.vms = vms
        self.migrations, self.problems = [], []
        self.moved = set()
        self.sustained, self.minutes = sustained, minutes

    def held(self, host):
        """(lowest, highest) load of the host over the policy's duration, or None when its history is too short."""
        if self.sustained is None:
            return (host.load, host.load)
        return self.sustained.get(host.name)

    def over(self, host, high):
        held = self.held(host)
        return held is not None and held[0] > high

    def under(self, host, low):
        held = self.held(host)
        return held is not None and held[1] < low

    def why(self, host, side, limit):
        if self.sustained is None:
            return "CPU load %s of host %s is %s %s %d%%" % (_load(host), host.name, side, _LIMITS[side], limit)
        low, high = self.held(host)
        return "CPU load of host %s was %s %s %d%% for the last %d minutes (%s to %s)" % (
            host.name, side, _LIMITS[side], limit, self.minutes, _percent(low), _percent(high))

    def on(self, host):
        return [v for v in self.vms if v["host"] == host and v["name"] not in self.moved]

    def move(self, vm, exclude=(), reason=""):
        """Where the VM would go, leaving its host (and ``exclude``): the move is made in the snapshot, or None."""
        scheduler, source = self.scheduler, vm["host"]
        scheduler.release(vm, source)
        request = dict(vm, exclude=sorted(set(exclude) | {source}))
        decision = scheduler.place(request)
        if decision.host is None:
            scheduler.commit(vm, source)
            return None
        target = decision.host["name"]
        scheduler.commit(vm, target)
        self.migrations.append({"vm": vm["name"], "from": source, "to": target, "reason": reason})
        self.moved.add(vm["name"])
        vm["host"] = target
        return target


def _enforce(state):
    scheduler = state.scheduler
    for vm in state.vms:
        source = vm["host"]
        scheduler.release(vm, source)
        why = scheduler.reason(vm, source)
        scheduler.commit(vm, source)
        if why is None or not why.startswith(_PLACEMENT_REASONS):
            continue
        if not state.move(vm, reason="its host %s no longer suits it: %s" % (source, why)):
            reason = "VM %s should leave it (%s), but no other host can run it" % (vm["name"], why)
            state.problems.append({"host": source, "reason": reason})


_LIMITS = {"above": "high_utilization", "below": "low_utilization"}


def _load(host):
    return _percent(host.load)


def _percent(value):
    return "%g%%" % round(value, 1)


def _over(state, high):
    scheduler = state.scheduler
    hot = sorted((h for h in scheduler.hosts if h.up and state.over(h, high)), key=lambda h: (-h.load, h.name))
    busy = [h.name for h in scheduler.hosts if h.load >= high]
    for host in hot:
        vms = sorted(state.on(host.name), key=lambda v: (v["memory_mib"], v["name"]))
        why = state.why(host, "above", high)
        for vm in vms:
            if state.move(vm, exclude=busy, reason=why):
                break
        else:
            if vms:
                state.problems.append({"host": host.name, "reason": "%s, but none of its VMs fits on a host below it"
                                       % why})


def _under(state, low, high):
    scheduler = state.scheduler
    idle = sorted((h for h in scheduler.hosts if h.up and state.under(h, low) and state.on(h.name)),
                  key=lambda h: (h.load, len(state.on(h.name)), h.name))
    if not idle:
        return
    host = idle[0]
    # the VMs go to hosts between the thresholds: neither idle ones (they are to be emptied too) nor busy ones
    exclude = [h.name for h in scheduler.hosts if h.load < low or h.load >= high]
    vms = sorted(state.on(host.name), key=lambda v: (-v["memory_mib"], v["name"]))
    done = []
    why = "%s: it is emptied so that it can be switched off" % state.why(host, "below", low)
    for vm in vms:
        if not state.move(vm, exclude=exclude, reason=why):
            break
        done.append(vm)
    if len(done) < len(vms):  # all or none: a host half emptied saves nothing
        for vm in reversed(done):
            state.migrations.pop()
            state.moved.discard(vm["name"])
            scheduler.release(vm, vm["host"])
            scheduler.commit(vm, host.name)
            vm["host"] = host.name
        state.problems.append({"host": host.name, "reason": "%s, but its VMs do not all fit on the hosts between "
                               "the thresholds" % state.why(host, "below", low)})


def _crowded(state, high_count, threshold):
    scheduler = state.scheduler
    up = [h for h in scheduler.hosts if h.up]
    if len(up) < 2:
        return
    most = max(up, key=lambda h: (h.vms, h.name))
    fewest = min(up, key=lambda h: (h.vms, h.name))
    if most.vms <= high_count or most.vms - fewest.vms < threshold:
        return
    why = "host %s runs %d VMs: above high_vm_count %d and %d or more above host %s (%d)" % (
        most.name, most.vms, high_count, threshold, fewest.name, fewest.vms)
    others = [h.name for h in up if h is not fewest]
    for vm in sorted(state.on(most.name), key=lambda v: (v["memory_mib"], v["name"])):
        if state.move(vm, exclude=others, reason=why):
            return
    state.problems.append({"host": most.name, "reason": "it runs %d VMs, but none of them fits on host %s"
                           % (most.vms, fewest.name)})
