# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every module shares: the engine connection option and turning errors into one message."""

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import VirtplaneError
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _db
from ansible_collections.virtplane.kvm.plugins.module_utils.virt import _client


def _env(name):
    return (env_fallback, ["VIRTPLANE_ENGINE_%s" % name])


ENGINE_OPTION = dict(
    type="dict",
    apply_defaults=True,
    options=dict(
        host=dict(type="str", default="localhost", fallback=_env("HOST")),
        port=dict(type="int", default=5432, fallback=_env("PORT")),
        database=dict(type="str", default="virtplane", fallback=_env("DATABASE")),
        user=dict(type="str", default="virtplane", fallback=_env("USER")),
        password=dict(type="str", no_log=True, fallback=_env("PASSWORD")),
        password_file=dict(type="path", default=_db.DEFAULT_PASSWORD_FILE, fallback=_env("PASSWORD_FILE"),
                           no_log=False),
        sslmode=dict(type="str", default="prefer", fallback=_env("SSLMODE"),
                     choices=["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]),
        connect_timeout=dict(type="int", default=10),
    ),
)


class EngineModule(AnsibleModule):
    """An AnsibleModule that talks to the engine database (and possibly to libvirt)."""

    def __init__(self, argument_spec, needs_libvirt=False, read_only=False, **kwargs):
        spec = dict(engine=ENGINE_OPTION)
        spec.update(argument_spec)
        super().__init__(argument_spec=spec, **kwargs)
        # an _info module reads: a database error is a failed read, never a "refused change"
        self.read_only = read_only
        # a password typed into a URI is refused, and masked wherever Ansible repeats the input
        self.no_log_values.update(_client.uri_passwords(self.params))
        if _db.PSYCOPG_IMPORT_ERROR:
            self.fail_json(msg=missing_required_lib("psycopg (version 3)"), exception=_db.PSYCOPG_IMPORT_ERROR)
        if needs_libvirt and _client.LIBVIRT_IMPORT_ERROR:
            self.fail_json(msg=missing_required_lib("libvirt-python"), exception=_client.LIBVIRT_IMPORT_ERROR)

    def run(self, operation):
        """Open the engine, run ``operation(engine)``, close; any VirtplaneError becomes one message."""
        engine = None
        try:
            engine = _db.connect(self.params["engine"])
            return operation(engine)
        except VirtplaneError as exc:
            self.fail_json(msg=str(exc), **{k: v for k, v in exc.details.items() if k in ("field",)})
        except _db.DatabaseError as exc:
            # a constraint or serialization failure the service did not foresee (a concurrent change):
            # still one message that names the database, and the transaction was rolled back
            where = engine.where if engine is not None else "the engine database"
            if self.read_only:
                self.fail_json(msg="Failed to read from %s: %s" % (where, _db.describe_error(exc)))
            self.fail_json(msg="%s%s refused the change: %s" % (where[0].upper(), where[1:], _db.describe_error(exc)))
        finally:
            if engine is not None:
                engine.close()

    def exit_outcome(self, outcome, resource_key, **extra):
        result = dict(changed=outcome.changed, actions=outcome.actions, **extra)
        result[resource_key] = outcome.resource or {}
        if self._diff:
            result["diff"] = outcome.diff
        self.exit_json(**result)
