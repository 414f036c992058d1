# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The placement scheduler: oVirt's filters and weights, answered from an index (pure: no DB, no libvirt).

A ``Scheduler`` is built from a snapshot of one cluster — its hosts with their capacity, what is
committed on them and their load; where the cluster's VMs run; its affinity groups; its policy — and
answers ``place(request)`` with a ``Decision``: the host of the best score among those that pass
every filter, and, when asked, the reason each other host was rejected. ``commit(request, host)``
records a placement in the snapshot, so that many VMs are placed one after the other as the engine
would under the cluster's lock.

Filters (hard): the host is Up; it can give guests the cluster's CPU model; the VM's pinning; the
VM's logical networks realized and its storage domains active on the host; the CPU features it needs;
memory within the cluster's overcommit after the host's own reserve; vCPUs within the host's threads
and the CPU overcommit ratio; hard VM-to-VM affinity (with the VMs of a positive group, away from
those of a negative one) and hard VM-to-host affinity; the HA reservation (with the cluster's
``ha_reservation``, room is kept so that the HA VMs of any one host that fails can restart on the
others: counted in memory, as the sum of what the other hosts have free, so packing, vCPUs and
networks are not modelled).

Weights (higher is better), mixed by the policy (``WEIGHTS``): free memory, CPU load, VM count,
power saving (fill busy hosts, keep empty ones empty), HA spreading (fewer HA VMs on a host, for HA
VMs); soft affinity adds or takes ``SOFT_AFFINITY`` times the group's priority (1-100) for each soft group
with a VM on the host, so that of two soft groups that disagree the one of higher priority wins.

How it stays fast: a host's score depends on the host alone (soft affinity touches the few hosts that
run the VM's group members, which are scored one by one). Hosts are grouped by what the static filters
look at (status, networks, storage domains, CPU features), and in each group bucketed by their free
memory in powers of two, each bucket a heap by score (entries of hosts that changed are dropped when
they come up). A placement merges the tops of the buckets that can hold the VM and takes the first
that passes the remaining filters: the same host an exhaustive pass would choose (``exhaustive``, the
reference, filters and weighs every host one at a time, as oVirt does).
"""

from __future__ import annotations

import heapq
import itertools

from ansible_collections.virtplane.kvm.plugins.module_utils._choices import CPU_MODES

# policy -> weight factors: free memory, CPU load, VM count, power saving, HA spreading
WEIGHTS = {
    "none": {"memory": 1.0, "cpu": 0.0, "vms": 0.0, "power": 0.0, "ha": 1.0},
    "evenly_distributed": {"memory": 1.0, "cpu": 2.0, "vms": 0.0, "power": 0.0, "ha": 1.0},
    "power_saving": {"memory": 0.0, "cpu": 0.0, "vms": 0.0, "power": 3.0, "ha": 1.0},
    "vm_evenly_distributed": {"memory": 0.5, "cpu": 0.0, "vms": 2.0, "power": 0.0, "ha": 1.0},
}
SOFT_AFFINITY = 2.0  # a soft group's weight for each of its VMs' hosts: above every load weight put together


def _gib(mib):
    return ("%.1f" % (mib / 1024.0)).rstrip("0").rstrip(".")


class Decision:
    """The chosen host (a snapshot entry, or None) and, computed when asked, why each other host was not."""

    def __init__(self, host, scheduler=None, request=None, rejected=None, score=None):
        self.host = host
        self.score = score
        self._scheduler, self._request, self._rejected = scheduler, request, rejected

    @property
    def rejected(self):
        if self._rejected is None:
            self._rejected = self._scheduler.reasons(self._request, chosen=self.host)
        return self._rejected

    def explain(self):
        return "; ".join("%s: %s" % (name, self.rejected[name]) for name in sorted(self.rejected))


class _Host:
    __slots__ = ("entry", "name", "up", "status_text", "networks", "domains", "features", "models", "limit_mib",
                 "committed_mib", "cpus", "cpu_limit", "committed_vcpus", "vms", "load", "ha_mib", "ha_vms",
                 "version", "group")

    def __init__(self, entry):
        self.entry = entry
        self.name = entry["name"]
        status = entry.get("status", "Up")
        self.up = status == "Up"
        reason = entry.get("status_reason")
        self.status_text = "host is %s%s" % (status, " (%s)" % reason if reason else "")
        self.networks = frozenset(entry.get("networks") or ())
        self.domains = frozenset(entry.get("storage_domains") or ())
        self.features = frozenset(entry.get("cpu_features") or ())
        models = entry.get("cpu_models")
        self.models = None if models is None else frozenset(models)  # None: libvirt could not tell
        memory, cpus = capacity(entry)
        self.limit_mib = None if memory is None else memory * (entry.get("memory_overcommit_percent") or 100) / 100.0
        self.committed_mib = entry.get("committed_memory_mib") or 0
        self.cpus = cpus
        self.cpu_limit = None if cpus is None else cpus * float(entry.get("cpu_overcommit_ratio") or 1)
        self.committed_vcpus = entry.get("committed_vcpus") or 0
        self.vms = entry.get("vms") or 0
        self.load = float(entry.get("cpu_load_percent") or 0)
        self.ha_mib = entry.get("ha_memory_mib") or 0
        self.ha_vms = entry.get("ha_vms") or 0
        self.version = 0
        self.group = None

    def free_mib(self):
        return float("inf") if self.limit_mib is None else self.limit_mib - self.committed_mib


def capacity(entry):
    """(memory MiB, CPUs) the scheduler may give the host's VMs, overcommit aside: what libvirt reports, at
    most the administrator's cap (``schedulable_memory_mib``, ``schedulable_cpus``; 0 or absent: no cap),
    less what the host keeps for itself (``reserved_memory_mib``, ``reserved_cpus``). None: not reported."""
    out = []
    for reported, cap, reserved in (("memory_mib", "schedulable_memory_mib", "reserved_memory_mib"),
                                    ("cpu_count", "schedulable_cpus", "reserved_cpus")):
        value = entry.get(reported)
        if not value:
            out.append(None)
            continue
        if entry.get(cap):
            value = min(value, entry[cap])
        out.append(max(0, value - (entry.get(reserved) or 0)))
    return tuple(out)


def _bucket(free):
    """Free memory in powers of two: every host of bucket b >= 1 has at least 2**(b-1) MiB free."""
    if free == float("inf"):
        return 64
    return 0 if free < 1 else min(63, int(free).bit_length())


class Scheduler:
    """Placement over one cluster's snapshot (see the module's docstring)."""

    def __init__(self, hosts, policy="none", vms=None, groups=(), ha_reservation=False, cpu_model=None):
        if policy not in WEIGHTS:
            raise ValueError("unknown scheduling policy %r" % (policy,))
        # the cluster's named CPU model, which every VM is started with (a CPU mode such as host-model fits any)
        self.cpu_model = cpu_model if cpu_model and cpu_model not in CPU_MODES else None
        self.weights = WEIGHTS[policy]
        self.policy = policy
        self.hosts = [_Host(h) for h in hosts]
        self.by_name = {h.name: h for h in self.hosts}
        self._slot = {h.name: i for i, h in enumerate(self.hosts)}  # where each is in ``hosts``
        self.locations = {}  # VM name -> host name, of the cluster's running VMs
        self._on_host = {}  # host name -> the names of the VMs ``locations`` puts there
        for vm, host in (vms or {}).items():
            self._locate(vm, host)
        self.groups = [dict(g) for g in groups]
        self._of_vm = {}  # VM name -> its groups
        for group in self.groups:
            for vm in group.get("vms") or ():
                self._of_vm.setdefault(vm, []).append(group)
        self.ha_reservation = ha_reservation
        self._counter = 0
        self._versions = itertools.count(1)  # versions of hosts' states: unique, so heap entries never tie
        self._groups = {}  # static signature -> {"hosts": [...], "buckets": {(bucket, ha): heap}}
        self._eligible = {}  # request's static needs -> [group signature]
        for host in self.hosts:
            self._join_group(host)
        for host in self.hosts:
            self._push(host)
        # free memory as a host can give it: an overcommitted host gives none (never less)
        self.total_free = sum(max(0.0, h.free_mib()) for h in self.hosts if h.up and h.limit_mib is not None)
        self._ha_heap = []
        for host in self.hosts:
            self._push_ha(host)

    def _join_group(self, host):
        key = (host.up, host.networks, host.domains, host.features, self._runs_model(host))
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = {"key": key, "hosts": [], "buckets": {}}
            self._eligible = {}  # a new group may suit requests that were answered without it
        host.group = group
        group["hosts"].append(host)

    def _given(self, host):
        """What the host adds to ``total_free``."""
        return max(0.0, host.free_mib()) if host.up and host.limit_mib is not None else 0.0

    def refresh(self, entries=(), removed=(), locations=None, moved=()):
        """The snapshot brought up to date with what changed since it was taken: ``entries`` replace the hosts
        of their names (or join), ``removed`` hosts go; the VMs that ran on the ``moved`` hosts are forgotten
        and ``locations`` ({VM: host}) recorded."""
        replaced = False
        for name in list(removed) + [e["name"] for e in entries]:
            old = self.by_name.pop(name, None)
            if old is None:
                continue
            self.total_free -= self._given(old)
            old.version = next(self._versions)  # its index entries are stale from now on
            old.group["hosts"].remove(old)
            replaced = True
        if replaced or entries:
            fresh = {e["name"]: _Host(e) for e in entries}
            for host in fresh.values():
                host.version = next(self._versions)  # never one an older entry of the name has (they would tie)
            if removed or any(name not in self._slot for name in fresh):
                self.hosts = [h for h in self.hosts if h.name in self.by_name] + list(fresh.values())
                self._slot = {h.name: i for i, h in enumerate(self.hosts)}
            else:  # the same hosts, in their places
                for name, host in fresh.items():
                    self.hosts[self._slot[name]] = host
            for host in fresh.values():
                self.by_name[host.name] = host
                self._join_group(host)
                self._push(host)
                self.total_free += self._given(host)
                self._push_ha(host)
        for host in set(moved) | set(removed):
            for vm in self._on_host.pop(host, ()):
                del self.locations[vm]
        for vm, host in (locations or {}).items():
            self._locate(vm, host)

    def _locate(self, vm, host):
        """``vm`` runs on ``host`` (None: nowhere)."""
        old = self.locations.pop(vm, None)
        if old is not None:
            self._on_host[old].discard(vm)
        if host is not None:
            self.locations[vm] = host
            self._on_host.setdefault(host, set()).add(vm)

    # -- scores ---------------------------------------------------------------------------------

    def score(self, host, ha=False):
        """The host's score for a VM (``ha``: an HA VM), soft affinity aside."""
        w = self.weights
        total = 0.0
        if host.limit_mib:
            free_part = max(0.0, host.free_mib()) / host.limit_mib
            total += w["memory"] * free_part + w["power"] * (1.0 - free_part) * (1.0 if host.vms else 0.5)
        elif w["power"]:
            total += w["power"] * (0.5 if host.vms else 0.25)
        total += w["cpu"] * (1.0 - min(host.load, 100.0) / 100.0)
        total += w["vms"] / (1.0 + host.vms)
        if ha:
            total += w["ha"] / (1.0 + host.ha_vms)
        return total

    def _push(self, host):
        if not host.up:
            return
        self._counter += 1
        bucket = _bucket(host.free_mib())
        for ha in (False, True):
            heap = host.group["buckets"].setdefault((bucket, ha), [])
            heapq.heappush(heap, (-self.score(host, ha), host.name, host.version, host))

    def _push_ha(self, host):
        if self.ha_reservation and host.up and host.limit_mib is not None:
            heapq.heappush(self._ha_heap, (-(host.ha_mib + host.free_mib()), host.name, host.version, host))

    # -- filters ----------------------------------------------------------------------------------

    def _affinity(self, request):
        """What the VM's groups say: (hosts it must be on or None, [(allowed hosts, reason)] of the groups that
        say so, {host: reason} it must avoid, {host: bonus} of soft groups)."""
        name = request.get("name")
        must, musts, avoid, bonus = None, [], {}, {}
        for group in self._of_vm.get(name, ()):
            weight = SOFT_AFFINITY * (group.get("priority") or 1)  # a soft group of higher priority outweighs
            others = [v for v in group["vms"] if v != name and v in self.locations]
            where = {}
            for vm in others:
                where.setdefault(self.locations[vm], []).append(vm)
            rule = group.get("vm_rule")
            if rule and group.get("vm_enforcing"):
                if rule == "positive" and where:
                    allowed = set(where)
                    must = allowed if must is None else must & allowed
                    musts.append((allowed, "affinity group %s: the VM must run with %s (on %s)" % (
                        group["name"], ", ".join(sorted(others)), ", ".join(sorted(where)))))
                elif rule == "negative":
                    for host, vms in where.items():
                        avoid.setdefault(host, "affinity group %s: the VM must not run with %s"
                                         % (group["name"], ", ".join(sorted(vms))))
            elif rule:
                for host in where:
                    bonus[host] = bonus.get(host, 0.0) + (weight if rule == "positive" else -weight)
            host_rule = group.get("host_rule")
            hosts = set(group.get("hosts") or ())
            if host_rule and group.get("host_enforcing") and hosts:
                if host_rule == "positive":
                    must = hosts if must is None else must & hosts
                    musts.append((hosts, "affinity group %s: the VM must run on %s"
                                  % (group["name"], ", ".join(sorted(hosts)))))
                else:
                    for host in hosts:
                        avoid.setdefault(host, "affinity group %s: the VM must not run on %s"
                                         % (group["name"], ", ".join(sorted(hosts))))
            elif host_rule and hosts:
                for host in hosts:
                    bonus[host] = bonus.get(host, 0.0) + (weight if host_rule == "positive" else -weight)
        # hosts the caller rules out (the one a VM leaves): a list, or {host: why}
        exclude = request.get("exclude") or ()
        for host, why in exclude.items() if isinstance(exclude, dict) else ((h, "ruled out") for h in exclude):
            avoid[host] = why
        return must, musts, avoid, bonus

    def _runs_model(self, host):
        return self.cpu_model is None or (host.models is not None and self.cpu_model in host.models)

    def _static_reason(self, request, host):
        if not host.up:
            return host.status_text
        if not self._runs_model(host):
            if host.models is None:
                return "cannot tell whether it runs the cluster's CPU model %s: its libvirt lists no CPU models" \
                    % self.cpu_model
            return "its CPU cannot give guests the cluster's CPU model %s" % self.cpu_model
        missing = sorted(set(request.get("networks") or ()) - host.networks)
        if missing:
            return "logical network %s not realized" % ", ".join(missing)
        missing = sorted(set(request.get("storage_domains") or ()) - host.domains)
        if missing:
            return "storage domain %s not active" % ", ".join(missing)
        missing = sorted(set(request.get("cpu_features") or ()) - host.features)
        if missing:
            return "CPU lacks %s" % ", ".join(missing)
        return None

    def _fit_reason(self, request, host):
        memory, vcpus = request["memory_mib"], request["vcpus"]
        if host.limit_mib is not None and host.committed_mib + memory > host.limit_mib:
            return "memory %s of %s GiB committed, %s GiB more does not fit" % (
                _gib(host.committed_mib), _gib(host.limit_mib), _gib(memory))
        if host.cpu_limit is not None:
            if vcpus > host.cpus:
                return "%d vCPUs are more than the %d CPUs it schedules" % (vcpus, host.cpus)
            if host.committed_vcpus + vcpus > host.cpu_limit:
                return "%d of %g vCPUs committed, %d more do not fit" % (host.committed_vcpus, host.cpu_limit, vcpus)
        return self._ha_reason(request, host)

    def _ha_reason(self, request, host):
        """With the HA reservation: would the HA VMs of some host no longer find room on the others?"""
        if not self.ha_reservation or host.limit_mib is None:
            return None
        memory = request["memory_mib"]
        total = self.total_free - memory
        ha_here = host.ha_mib + (memory if request.get("ha") else 0)
        if ha_here and ha_here > total - max(0.0, host.free_mib() - memory):
            return "HA reservation: its HA VMs (%s GiB) could not restart on the other hosts" % _gib(ha_here)
        for key, name, _version, other in self._ha_top(2):
            if other is host:
                continue
            if -key > total:
                return "HA reservation: the HA VMs of host %s (%s GiB) could not restart on the others" % (
                    name, _gib(other.ha_mib))
            break
        return None

    def _ha_top(self, count):
        """The ``count`` hosts of the largest HA memory + free memory (stale entries dropped)."""
        tops = []
        while self._ha_heap and len(tops) < count:
            entry = heapq.heappop(self._ha_heap)
            if entry[2] == entry[3].version:
                tops.append(entry)
        for entry in tops:
            heapq.heappush(self._ha_heap, entry)
        return tops

    def reason(self, request, host, affinity=None):
        """Why ``host`` (a snapshot entry's name or a _Host) cannot take the VM, or None."""
        host = self.by_name[host] if isinstance(host, str) else host
        pinned = request.get("hosts")
        if pinned and host.name not in pinned:
            return "the VM is pinned to %s" % ", ".join(sorted(pinned))
        static = self._static_reason(request, host)
        if static:
            return static
        fit = self._fit_reason(request, host)
        if fit:
            return fit
        must, musts, avoid, _bonus = affinity or self._affinity(request)
        if must is not None and host.name not in must:
            for allowed, why in musts:
                if host.name not in allowed:
                    return why
            return "affinity groups leave no host"
        return avoid.get(host.name)

    def reasons(self, request, chosen=None):
        affinity = self._affinity(request)
        rejected = {}
        for host in self.hosts:
            if chosen is not None and host.name == chosen["name"]:
                continue
            why = self.reason(request, host, affinity)
            rejected[host.name] = why or "a better host was chosen"
        return rejected

    # -- placement --------------------------------------------------------------------------------

    def _eligible_groups(self, request):
        key = (frozenset(request.get("networks") or ()), frozenset(request.get("storage_domains") or ()),
               frozenset(request.get("cpu_features") or ()))
        groups = self._eligible.get(key)
        if groups is None:
            groups = [g for g in self._groups.values()
                      if g["key"][0] and g["key"][4] and key[0] <= g["key"][1] and key[1] <= g["key"][2]
                      and key[2] <= g["key"][3]]
            self._eligible[key] = groups
        return groups

    def place(self, request):
        """The best host that passes every filter: a Decision (its ``rejected`` is computed when asked)."""
        affinity = self._affinity(request)
        must, _musts, avoid, bonus = affinity
        ha = bool(request.get("ha"))
        pinned = request.get("hosts")
        explicit = None
        if pinned:
            explicit = set(pinned) if must is None else set(pinned) & must
        elif must is not None:
            explicit = must
        best, best_score = None, None
        if explicit is not None:
            for name in sorted(explicit):
                host = self.by_name.get(name)
                if host is None or self.reason(request, host, affinity):
                    continue
                value = self.score(host, ha) + bonus.get(name, 0.0)
                if best is None or value > best_score:
                    best, best_score = host, value
        else:
            best, best_score = self._from_index(request, ha, avoid, bonus)
            for name, extra in bonus.items():  # the hosts soft affinity scores apart
                host = self.by_name.get(name)
                if host is None or name in avoid or self.reason(request, host, affinity):
                    continue
                value = self.score(host, ha) + extra
                if best is None or value > best_score or (value == best_score and name < best.name):
                    best, best_score = host, value
        if best is None:
            return Decision(None, self, request)
        return Decision(best.entry, self, request, score=best_score)

    def _from_index(self, request, ha, avoid, bonus):
        """The best host of the buckets that can hold the VM's memory, skipping ``avoid`` and ``bonus`` hosts."""
        memory = request["memory_mib"]
        need = _bucket(memory)
        heads = []  # (negative score, name, version, host, heap)
        for group in self._eligible_groups(request):
            for (bucket, for_ha), heap in group["buckets"].items():
                if for_ha != ha or bucket < need:
                    continue
                self._drop_stale(heap, bucket)
                if heap:
                    top = heap[0]
                    heads.append((top[0], top[1], top[2], top[3], heap, bucket))
        heapq.heapify(heads)
        held = []  # entries taken off their heap while looking: put back
        found = None
        try:
            while heads:
                negative, name, version, host, heap, bucket = heapq.heappop(heads)
                entry = heapq.heappop(heap)
                held.append((heap, entry))
                if name not in avoid and name not in bonus and not self._fit_reason(request, host):
                    found = (host, -negative)
                    break
                self._drop_stale(heap, bucket)
                if heap:
                    top = heap[0]
                    heapq.heappush(heads, (top[0], top[1], top[2], top[3], heap, bucket))
        finally:
            for heap, entry in held:
                heapq.heappush(heap, entry)
        return found if found else (None, None)

    @staticmethod
    def _drop_stale(heap, bucket):
        while heap:
            _negative, _name, version, host = heap[0]
            if version == host.version and _bucket(host.free_mib()) == bucket:
                return
            heapq.heappop(heap)

    def commit(self, request, host_name, vm_name=None):
        """Record a placement: the host's commitments grow, and its entries in the index are renewed."""
        host = self.by_name[host_name]
        before = host.free_mib()
        host.committed_mib += request["memory_mib"]
        host.committed_vcpus += request["vcpus"]
        host.vms += 1
        if request.get("ha"):
            host.ha_mib += request["memory_mib"]
            host.ha_vms += 1
        if host.up and host.limit_mib is not None:
            self.total_free += max(0.0, host.free_mib()) - max(0.0, before)
        host.version = next(self._versions)
        self._push(host)
        self._push_ha(host)
        if vm_name or request.get("name"):
            self._locate(vm_name or request["name"], host_name)

    def release(self, request, host_name, vm_name=None):
        """The opposite of ``commit``: the VM no longer holds the host (as when it leaves it)."""
        host = self.by_name[host_name]
        before = host.free_mib()
        host.committed_mib -= request["memory_mib"]
        host.committed_vcpus -= request["vcpus"]
        host.vms -= 1
        if request.get("ha"):
            host.ha_mib -= request["memory_mib"]
            host.ha_vms -= 1
        if host.up and host.limit_mib is not None:
            self.total_free += max(0.0, host.free_mib()) - max(0.0, before)
        host.version = next(self._versions)
        self._push(host)
        self._push_ha(host)
        if vm_name or request.get("name"):
            self._locate(vm_name or request["name"], None)

    def adjust(self, host_name, vm_name, held, sign):
        """What the database recorded: the VM's reservation ``held`` (memory_mib, vcpus, ha) came to the host
        (``sign`` 1) or left it (-1). Leaving does not move the VM's location away from another host."""
        if sign > 0:
            self.commit(held, host_name, vm_name)
            return
        self.release(held, host_name)
        if self.locations.get(vm_name) == host_name:
            self._locate(vm_name, None)

    def assess(self, request):
        """Every host with why it cannot take the VM (None when it can) and its score there: [(name, reason,
        score)] in name order — what a dry run shows."""
        affinity = self._affinity(request)
        ha = bool(request.get("ha"))
        out = []
        for host in sorted(self.hosts, key=lambda h: h.name):
            why = self.reason(request, host, affinity)
            score = None if why else round(self.score(host, ha) + affinity[3].get(host.name, 0.0), 4)
            out.append((host.name, why, score))
        return out

    # -- the reference ----------------------------------------------------------------------------

    def exhaustive(self, request):
        """The reference: every host filtered and weighed one at a time (as oVirt does); same answer as place."""
        affinity = self._affinity(request)
        bonus = affinity[3]
        ha = bool(request.get("ha"))
        best, best_score, rejected = None, None, {}
        for host in self.hosts:
            why = self.reason(request, host, affinity)
            if why:
                rejected[host.name] = why
                continue
            value = self.score(host, ha) + bonus.get(host.name, 0.0)
            if best is None or value > best_score or (value == best_score and host.name < best.name):
                best, best_score = host, value
        return Decision(best.entry if best else None, rejected=rejected, score=best_score)
