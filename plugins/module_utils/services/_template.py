# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Templates: a stopped VM's definition kept for making VMs, with full copies of its disks.

Creating one reserves the template's row and the source VM (a job: the VM cannot start while its
disks are copied), copies each disk through the disk service (a full copy in the template's
storage domain, owned by the template), and confirms. A failure removes the copies made and the
row. A VM made from a template (``vm`` with ``template``) gets its definition and a clone of each of
its disks: thin (a qcow2 volume whose backing file is the template's disk) or a full copy. A
template is not removed while a thin clone stands on it.
"""

from __future__ import annotations

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import ConflictError, NotFoundError
from ansible_collections.virtplane.kvm.plugins.module_utils._validation import (
    validate_description,
    validate_name,
    validate_range,
    validate_timeout,
)
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _events
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _storage_domains as domain_rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _templates as template_rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _vms as vm_rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine._db import LOCK_DATACENTER
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _disk, _operation, _vm
from ansible_collections.virtplane.kvm.plugins.module_utils.services._common import Outcome, Spec, plain


class TemplateSpec(Spec):
    FIELDS = ("name", "vm", "storage_domain", "datacenter", "description", "state", "timeout", "wait_timeout")

    def validate(self):
        validate_name("name", self.name)
        for field in ("vm", "storage_domain", "datacenter"):
            if getattr(self, field) is not None:
                validate_name(field, getattr(self, field))
        validate_description("description", self.description)
        self.state = self.state or "present"
        self.timeout = 15 if self.timeout is None else self.timeout
        validate_timeout("timeout", self.timeout)
        self.wait_timeout = 60 if self.wait_timeout is None else self.wait_timeout
        validate_range("wait_timeout", self.wait_timeout, 0, 3600, "seconds")


def view(row):
    spec = row["spec"] or {}
    return {"id": plain(row["id"]), "name": row["name"], "datacenter": row["datacenter"],
            "description": row["description"], "vm": spec.get("vm"),
            "definition": {k: v for k, v in (spec.get("definition") or {}).items() if k != "cloud_init"},
            "disks": [{"name": d["name"], "storage_domain": d["storage_domain"], "format": d["format"],
                       "size_bytes": d["size_bytes"], "status": d["status"], "source": d.get("source"),
                       "bus": d.get("bus"), "bootable": d.get("bootable")} for d in _vm.template_disks(row)],
            "created_at": plain(row["created_at"])}


def ensure(engine, spec, check_mode=False):
    if spec.state == "absent":
        return _operation.run(engine, TemplateRemove(engine, check_mode, spec))
    return _operation.run(engine, TemplateCreate(engine, check_mode, spec))


class _TemplateOperation(_operation.Operation):
    def __init__(self, engine, check_mode, spec):
        super().__init__(engine, check_mode)
        self.spec = spec
        self.wait_timeout = spec.wait_timeout

    def _find(self, cur):
        row = template_rows.find(cur, self.spec.name, self.spec.datacenter)
        return row


class TemplateCreate(_TemplateOperation):
    action = "template.create"

    def prepare(self, cur):
        row = self._find(cur)
        if row is not None:
            self.lock = (LOCK_DATACENTER, row["datacenter"])
            return _operation.Plan(row=row)
        if self.spec.vm is None or self.spec.storage_domain is None:
            raise ConflictError("Cannot create template '%s': give the stopped VM it is made from (vm) and the "
                                "storage domain for its disks (storage_domain)" % self.spec.name)
        source = vm_rows.find(cur, self.spec.vm)
        if source is None:
            raise NotFoundError("VM", self.spec.vm, "create template '%s'" % self.spec.name)
        self.lock = (LOCK_DATACENTER, source["datacenter"])
        return _operation.Plan(row=None)

    def reserve(self, cur, plan):
        spec = self.spec
        row = self._find(cur)
        if (row is None) != (plan.row is None):
            raise _operation.Retry()
        if row is not None:
            _operation.claim(cur, row, "template '%s'" % spec.name)
            if spec.description is not None and spec.description != row["description"]:
                plan.before, plan.after = {"description": row["description"]}, {"description": spec.description}
                if not self.check_mode:
                    template_rows.update(cur, row["id"], {"description": spec.description})
                    row = self._find(cur)
                plan.outcome = Outcome(True, plan.before, plan.after, dict(view(row), **plan.after),
                                       ["update description"])
                return
            plan.outcome = Outcome(False, {}, {}, view(row), [])
            return
        source = vm_rows.find(cur, spec.vm, lock=True)
        _operation.claim(cur, source, "VM '%s'" % spec.vm)
        if source["status"] != "Down":
            raise ConflictError("Cannot create template '%s' from VM '%s': it is %s; a template is made from a "
                                "stopped VM (its disks are copied as they are)"
                                % (spec.name, spec.vm, source["status"]))
        domain = domain_rows.find(cur, spec.storage_domain, source["datacenter"])
        if domain is None:
            raise NotFoundError("storage domain", spec.storage_domain, "create template '%s'" % spec.name)
        definition = _vm.current_definition(source)
        # what a VM made from it does not take: the source's console password, its MACs, its template
        definition["console"] = dict(definition["console"], password_set=False)
        definition["template"] = None
        definition["nics"] = [{"name": n["name"], "network": n["network"], "model": n["model"], "mac": None}
                              for n in definition["nics"]]
        definition.pop("disks")
        disks = [{"name": "%s-%s" % (spec.name, d["name"]), "source": d["name"], "bus": d["bus"],
                  "bootable": d["bootable"], "position": i, "source_disk": d}
                 for i, d in enumerate(source["disks"])]
        plan.source, plan.domain, plan.disks = source, domain, disks
        plan.actions = ["create"] + ["copy disk %s to %s" % (d["source"], domain["name"]) for d in disks]
        plan.after = {"name": spec.name, "vm": spec.vm, "disks": [d["name"] for d in disks]}
        if self.check_mode:
            plan.outcome = Outcome(True, {}, plan.after, plan.after, plan.actions)
            return
        plan.row = template_rows.insert(cur, {
            "datacenter_id": source["datacenter_id"], "name": spec.name, "description": spec.description or "",
            "spec": {"vm": spec.vm, "definition": definition,
                     "disks": [{k: v for k, v in d.items() if k != "source_disk"} for d in disks]}})
        self.start_job(cur, plan, "template", plan.row["id"], spec.name, "create template %s from VM %s"
                       % (spec.name, spec.vm), datacenter=source["datacenter"])
        template_rows.set_job(cur, plan.row["id"], plan.job["id"])
        vm_rows.set_runtime(cur, source["id"], job_id=plan.job["id"])  # it does not start while it is copied

    def act(self, plan):
        plan.copied = []
        for disk in plan.disks:
            source = disk["source_disk"]
            clone = _disk.clone_source(source, thin=False)
            _operation.run(self.engine, _disk.DiskPresent(self.engine, False, _disk.DiskSpec(
                name=disk["name"], storage_domain=plan.domain["name"], datacenter=plan.source["datacenter"],
                clone_of=clone, template_id=plan.row["id"], timeout=self.spec.timeout,
                wait_timeout=self.spec.wait_timeout)))
            plan.copied.append(disk["name"])

    def undo(self, plan, error):
        for name in getattr(plan, "copied", []):
            _operation.run(self.engine, _disk.DiskRemove(self.engine, False, _disk.DiskSpec(
                name=name, storage_domain=plan.domain["name"], datacenter=plan.source["datacenter"],
                state="absent", template_id=plan.row["id"], timeout=self.spec.timeout)))

    def release(self, cur, plan, error):
        vm_rows.set_runtime(cur, plan.source["id"], job_id=None)
        template_rows.delete(cur, plan.row["id"])

    def confirm(self, cur, plan, result):
        if self.check_mode:
            return plan.outcome
        vm_rows.set_runtime(cur, plan.source["id"], job_id=None)
        template_rows.set_job(cur, plan.row["id"], None)
        _events.record(cur, "TEMPLATE_CREATED", "Template %s was made from VM %s (%d disks copied to %s)"
                       % (self.spec.name, self.spec.vm, len(plan.disks), plan.domain["name"]),
                       object_type="template", object_id=plan.row["id"], object_name=self.spec.name,
                       datacenter=plan.source["datacenter"], vm=self.spec.vm, job_id=plan.job["id"])
        return Outcome(True, {}, plan.after, view(self._find(cur)), plan.actions)


_operation.release_only("template.create", lambda cur, template_id: template_rows.set_job(cur, template_id, None),
                        "released; remove the template and create it again if its disks are incomplete")


class TemplateRemove(_TemplateOperation):
    action = "template.remove"

    def prepare(self, cur):
        row = self._find(cur)
        self.lock = (LOCK_DATACENTER, row["datacenter"] if row else "")
        return _operation.Plan(row=row)

    def reserve(self, cur, plan):
        row = self._find(cur)
        if row is None:
            plan.outcome = Outcome(False)
            return
        _operation.claim(cur, row, "template '%s'" % self.spec.name)
        vms = template_rows.vms_on(cur, row["id"])
        clones = template_rows.clones(cur, row["id"])
        if clones:
            raise ConflictError("Cannot remove template '%s': thin clones stand on its disks (disks %s%s); remove "
                                "them first" % (self.spec.name, ", ".join(clones),
                                                " of VMs %s" % ", ".join(vms) if vms else ""))
        plan.row = row
        plan.actions = ["remove disk %s" % d["name"] for d in row["disks"]] + ["remove"]
        plan.before = {"name": row["name"]}
        if self.check_mode:
            plan.outcome = Outcome(True, plan.before, {}, {}, plan.actions)
            return
        self.start_job(cur, plan, "template", row["id"], row["name"], "remove template %s" % row["name"],
                       datacenter=row["datacenter"])
        template_rows.set_job(cur, row["id"], plan.job["id"])

    def act(self, plan):
        for disk in plan.row["disks"]:
            _operation.run(self.engine, _disk.DiskRemove(self.engine, False, _disk.DiskSpec(
                name=disk["name"], storage_domain=disk["storage_domain"], datacenter=plan.row["datacenter"],
                state="absent", template_id=plan.row["id"], timeout=self.spec.timeout)))

    def release(self, cur, plan, error):
        template_rows.set_job(cur, plan.row["id"], None)

    def confirm(self, cur, plan, result):
        template_rows.delete(cur, plan.row["id"])
        _events.record(cur, "TEMPLATE_REMOVED", "Template %s was removed" % plan.row["name"],
                       object_type="template", object_id=plan.row["id"], object_name=plan.row["name"],
                       datacenter=plan.row["datacenter"], job_id=plan.job["id"])
        return Outcome(True, plan.before, {}, {}, plan.actions)


_operation.release_only("template.remove", lambda cur, template_id: template_rows.set_job(cur, template_id, None),
                        "released; removing the template again finishes it")


def template_info(engine, names=None, datacenter=None):
    with engine.transaction() as cur:
        rows = template_rows.listed(cur, datacenter)
    return [view(r) for r in rows if not names or r["name"] in names]
