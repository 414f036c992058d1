# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One balancing pass: the migrations the cluster's policy proposes now (``services._vm.balance_info``), made.

Each proposal is a ``vm.migrate`` to the host the balancer chose, which checks that host again under the
cluster's lock when it starts (a host that no longer suits the VM refuses it, with the reason). They go one
at a time, in the order proposed: a proposal may count on room one before it frees, which a migration holds
on both hosts until it ends. A VM that has left its host meanwhile is not moved. Check mode makes none and
lists them with their reasons.
"""

from __future__ import annotations

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import ConflictError
from ansible_collections.virtplane.kvm.plugins.module_utils._validation import validate_name
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _migrate, _operation
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _vm as vms
from ansible_collections.virtplane.kvm.plugins.module_utils.services._common import Outcome, Spec


class BalanceSpec(Spec):
    FIELDS = ("cluster", "policy", "policy_params", "migration_timeout", "timeout", "wait_timeout")

    def validate(self):
        validate_name("cluster", self.cluster)
        _migrate.validate_timeouts(self)


def _action(move):
    return "migrate VM %s from %s to %s: %s" % (move["vm"], move["from"], move["to"], move["reason"])


def ensure(engine, spec, check_mode=False):
    proposal = vms.balance_info(engine, spec.cluster, spec.policy, spec.policy_params)
    moves = proposal["migrations"]
    actions = [_action(m) for m in moves]
    if check_mode or not moves:
        return Outcome(bool(moves), resource=proposal, actions=actions)
    results = _migrate.migrate_many(engine, [(m["vm"], m["to"], m["from"]) for m in moves], 1, spec.timeout,
                                    spec.wait_timeout, spec.migration_timeout)
    done, failed = [], []
    for move in moves:
        outcome, error = results[move["vm"]]
        move["migrated"] = error is None and outcome.changed
        if move["migrated"]:
            done.append(move)
        elif error is None:
            move["error"] = "it left host %s meanwhile" % move["from"]
        else:
            move["error"] = _operation.describe(error)
            failed.append(move)
    if failed:
        raise ConflictError("Cluster %s was not balanced: %s; %s" % (
            spec.cluster, "; ".join("VM %s did not migrate to %s: %s" % (m["vm"], m["to"], m["error"])
                                    for m in failed),
            "VMs %s migrated" % ", ".join("%s (to %s)" % (m["vm"], m["to"]) for m in done) if done
            else "no VM moved"))
    return Outcome(bool(done), resource=proposal, actions=[_action(m) for m in done])
