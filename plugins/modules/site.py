#!/usr/bin/python
# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: site
short_description: Check a whole data center description against the engine, and prune what it no longer names
version_added: 0.6.0
description:
  - The first and the last step of C(playbooks/datacenter.yml) (which C(playbooks/site.yml) runs after the roles),
    which applies a data center described in inventory variables. The objects themselves are made by the
    modules of their kinds; this module sees the description as a whole.
  - Before anything changes it refuses a description that names something neither described nor in the engine
    (a VM's cluster, network, storage domain or template, a cluster's data center...), that describes an object
    twice or a VM in two clusters, that gives an object an option its kind does not have, or whose prune would
    remove a VM that is not Down - one message each, naming the item's place in the description. What matters
    only to create an object (a template's VM, a VM's template) is checked for new objects only. It returns what
    the description would create and what a prune would remove, in check mode as for real.
  - With O(prune=true) and O(apply_prune=true) it removes what the engine has and the description does not name,
    for each kind the description lists (a kind it does not list is left alone) - VMs first, then affinity groups,
    templates, logical networks, storage domains, hosts, clusters and data centers, each removed as the module of
    its kind would remove it (refused, with the reason, when something still stands on it).
  - Takes the description's names and references only, as the P(virtplane.kvm.description_refs#filter) filter
    keeps them, so that no password or cloud-init document of the description is among its arguments.
  - With O(compare), it also tells which items differ from the engine, so that a re-run of an unchanged description
    hands nothing to the tasks of its kinds. Each item is checked against the options of its kind's module (one it
    would refuse is refused here, naming it, before any kind is applied), then the service of its kind says, in
    check mode, whether it would change anything - the same code the module runs. An item it cannot compare (one
    the service cannot take yet, or one that is withheld) is pending, and its task reports what it does.
  - On a real run, a host or storage domain that has not changed is then ensured for real, which refreshes what
    its task would (a host's memory, CPUs and load, a domain's capacity on each host).
extends_documentation_fragment:
  - virtplane.kvm.engine
  - virtplane.kvm.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
options:
  description:
    description:
      - The description's names and references - C(description | virtplane.kvm.description_refs), where the
        description is a mapping of lists C(datacenters), C(clusters), C(hosts), C(storage_domains),
        C(logical_networks), C(affinity_groups), C(templates) and C(vms).
      - Storage domains, logical networks and templates are named within their data center, affinity groups
        within their cluster.
    type: dict
    required: true
  prune:
    description:
      - The description is the whole engine for the kinds it lists - what it does not name is to be removed.
      - Without it, the engine may have more than the description names, and references may name it.
    type: bool
    default: false
  prune_running:
    description: Let the prune power off and remove VMs that are not Down (refused otherwise, naming each).
    type: bool
    default: false
  apply_prune:
    description:
      - Remove what the prune names now (with O(prune=true)). Without it the module only checks and plans.
    type: bool
    default: false
  compare:
    description:
      - The description's items as the tasks of their kinds pass them to their modules -
        C(description | virtplane.kvm.description_compare(hosts, datacenter)), for each kind its list of items, each
        with the options of its kind's module (an item of C(vms) or C(hosts) is one element of the module's C(vms)
        or C(hosts) list), or C(null) for an item that is not to be compared here.
      - The result's RV(pending) tells which of them differ from the engine.
      - Changes made between this check and the task of a kind (by the hypervisor role, or by the tasks of earlier
        kinds) are not foreseen; a host the role registers is set up by its own registration.
    type: dict
author:
  - virtplane.kvm maintainers (@virtplane)
"""

EXAMPLES = r"""
- name: Check the description before anything changes
  virtplane.kvm.site:
    description: "{{ virtplane_description | virtplane.kvm.description_refs('paris') }}"
    prune: "{{ virtplane_prune | default(false) }}"
  register: site_plan

- name: After every kind is applied, remove what the description no longer names
  virtplane.kvm.site:
    description: "{{ virtplane_description | virtplane.kvm.description_refs('paris') }}"
    prune: true
    apply_prune: true
"""

RETURN = r"""
creations:
  description: The objects the description names that the engine does not have yet (made by the later tasks).
  returned: always
  type: list
  elements: str
  sample: ["create cluster 'dev'", "create VM 'web03'"]
removals:
  description: What the prune removes (or would remove), in order; empty without O(prune).
  returned: always
  type: list
  elements: str
  sample: ["remove VM 'old1'", "remove logical network 'legacy'"]
missing:
  description: For each kind the description lists, the names it describes that the engine does not have yet.
  returned: always
  type: dict
  sample: {clusters: [dev], vms: [web03]}
pending:
  description:
    - With O(compare), for each kind it lists, the places (from 0) in that kind's list of the items that differ from
      the engine or could not be compared; the P(virtplane.kvm.description_pending#filter) filter keeps those.
  returned: when O(compare) is given
  type: dict
  sample: {datacenters: [], vms: [3, 17]}
actions:
  description: What was removed (or would be, in check mode).
  returned: always
  type: list
  elements: str
"""

from ansible_collections.virtplane.kvm.plugins.module_utils import _options
from ansible_collections.virtplane.kvm.plugins.module_utils._description import KINDS
from ansible_collections.virtplane.kvm.plugins.module_utils._errors import ValidationError
from ansible_collections.virtplane.kvm.plugins.module_utils._module import EngineModule
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _site


def _prepared(compare):
    """{kind: [(index, params or None)]}: each item's parameters as its module takes them (None for a withheld
    item); an item its module would refuse is refused here, naming it, before anything changes."""
    prepared = {}
    for kind, items in compare.items():
        if kind not in KINDS or not isinstance(items, list):
            continue
        prepared[kind] = []
        for index, item in enumerate(items):
            try:
                params = None if item is None else _options.item_params(kind, item)
            except ValidationError as exc:
                field = _site.field_of(kind, index) + ("" if exc.field == kind else "." + exc.field)
                raise ValidationError(field, exc.cause)
            prepared[kind].append((index, params))
    return prepared


def main():
    module = EngineModule(dict(
        description=dict(type="dict", required=True),
        prune=dict(type="bool", default=False),
        prune_running=dict(type="bool", default=False),
        apply_prune=dict(type="bool", default=False),
        compare=dict(type="dict"),
    ), needs_libvirt=True, supports_check_mode=True)
    params = module.params
    if params["apply_prune"] and not params["prune"]:
        module.fail_json(msg="apply_prune needs prune: true")

    def operation(engine):
        outcome = _site.ensure(engine, params["description"], params["prune"], params["prune_running"],
                               params["apply_prune"], module.check_mode)
        if params["compare"] is not None:
            # after the description's own check, whose messages name an unknown option or reference better
            outcome.resource["pending"] = _site.pending(engine, _prepared(params["compare"]), module.check_mode)
        return outcome

    outcome = module.run(operation)
    result = dict(changed=outcome.changed, actions=outcome.actions, **outcome.resource)
    if module._diff:  # pylint: disable=protected-access
        result["diff"] = outcome.diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
