# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every module shares: the engine connection option and turning errors into one message."""

from __future__ import annotations

import math
import re

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib

from ansible_collections.virtplane.kvm.plugins.module_utils import _choices
from ansible_collections.virtplane.kvm.plugins.module_utils._errors import VirtplaneError
from ansible_collections.virtplane.kvm.plugins.module_utils._validation import shown
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
        password_file=dict(type="str", default=_db.DEFAULT_PASSWORD_FILE, fallback=_env("PASSWORD_FILE"),
                           no_log=False),
        sslmode=dict(type="str", default="prefer", fallback=_env("SSLMODE"),
                     choices=list(_choices.SSL_MODES)),
        sslrootcert=dict(type="str", fallback=_env("SSLROOTCERT")),
        connect_timeout=dict(type="int", default=10),
    ),
)
# The options every module that talks to hosts has (doc fragment virtplane.kvm.hosts) ...
TIMEOUT_OPTIONS = dict(timeout=dict(type="int", default=15))
# ... and every module whose work reserves an object (doc fragment virtplane.kvm.hosts.wait).
WAIT_OPTIONS = dict(wait=dict(type="bool", default=True), wait_timeout=dict(type="int", default=60))


_DIGITS = re.compile(r"-?[0-9]{1,18}")
_DECIMAL = re.compile(r"-?[0-9]{1,18}(\.[0-9]{1,18})?")
_PLACEHOLDERS = {"str": "x", "path": "/", "int": 0, "float": 0.0, "list": [], "dict": {}, "bool": False}


def strict_types(spec, params, prefix=""):
    """(field, cause) of the first parameter whose typed value is not plainly of its type, else None.

    A refused value is replaced by a harmless one of the right type, so that Ansible's own checks
    can finish before the refusal is reported (it is reported first, and nothing runs).
    """
    for name, option in spec.items():
        keys = [name] + list(option.get("aliases") or [])
        key = next((k for k in keys if params.get(k) is not None), None)
        if key is None:
            continue
        field = prefix + name
        value = params[key]
        kind = option.get("type", "str")
        cause = _strict_value(kind, option, value)
        if cause is None and kind == "dict" and option.get("options"):
            found = strict_types(option["options"], value, field + ".")
            if found:
                return found
        if cause is None and kind == "list":
            for item in value:
                cause = _strict_value(option.get("elements", "str"), option, item)
                if cause is None and option.get("elements") == "dict" and option.get("options"):
                    found = strict_types(option["options"], item, field + ".")
                    if found:
                        return found
                if cause:
                    break
        if cause:
            params[key] = option.get("default", _PLACEHOLDERS.get(kind)) if "choices" not in option \
                else option["choices"][0]
            return field, cause
    return None


def _strict_value(kind, option, value):
    if kind in ("str", "path"):
        if not isinstance(value, str):
            return "%s is not text (quote it)" % shown(value)
        choices = option.get("choices")
        if choices and value not in choices and option.get("type") != "list":
            return "%s is not one of %s" % (shown(value), ", ".join(str(c) for c in choices))
    elif kind == "int":
        plain = isinstance(value, int) or (isinstance(value, str) and _DIGITS.fullmatch(value))
        if isinstance(value, bool) or not plain:
            return "%s is not a whole number written in digits" % shown(value)
    elif kind == "float":
        if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value)
                                           or isinstance(value, str) and _DECIMAL.fullmatch(value)):
            return "%s is not a number written in digits" % shown(value)
    elif kind == "list":
        if not isinstance(value, list):
            return "%s is not a list" % shown(value)
        choices = option.get("choices")
        bad = [v for v in value if choices and v not in choices]
        if bad:
            return "%s is not one of %s" % (shown(bad[0]), ", ".join(str(c) for c in choices))
    elif kind == "dict" and (not isinstance(value, dict) or not all(isinstance(k, str) for k in value)):
        return "%s is not a mapping of names to values" % shown(value)
    return None


class StrictModule(AnsibleModule):
    """An AnsibleModule that takes each parameter only as plainly what it is (see ``_load_params``)."""

    def __init__(self, argument_spec, **kwargs):
        self._strict_spec = argument_spec
        self._refusal = None
        super().__init__(argument_spec=argument_spec, **kwargs)
        if self._refusal:
            field, cause = self._refusal
            self.fail_json(msg="Invalid value for '%s': %s" % (field, cause), field=field)

    def _load_params(self):
        """The parameters as typed, checked before Ansible converts them.

        Ansible turns '15\\n', '1e3', Arabic-Indic digits and 'Infinity' into numbers (or crashes on
        them), true into 'True' and a list into its repr; a choice with a trailing newline gets a
        message of two lines. Each is refused here, with the field named; and a password typed into a
        URI is masked wherever Ansible repeats the input, its own error messages included.
        """
        super()._load_params()
        self.no_log_values.update(_client.uri_passwords(self.params))
        self._refusal = strict_types(self._strict_spec, self.params)


class EngineModule(StrictModule):
    """An AnsibleModule that talks to the engine database (and possibly to libvirt)."""

    def __init__(self, argument_spec, needs_libvirt=False, read_only=False, **kwargs):
        spec = dict(engine=ENGINE_OPTION)
        spec.update(argument_spec)
        super().__init__(spec, **kwargs)
        # an _info module reads: a database error is a failed read, never a "refused change"
        self.read_only = read_only
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

    def spec_params(self):
        """The module's parameters as its service's spec takes them: no wait means a wait of 0 s."""
        params = dict(self.params)
        if params.get("wait") is False:
            params["wait_timeout"] = 0
        return params

    def ensure(self, service, spec_class, resource_key):
        """The module's whole run: its spec, the service's ``ensure``, the outcome as the result."""
        def operation(engine):
            return service.ensure(engine, spec_class.from_params(self.spec_params()), self.check_mode)
        self.exit_outcome(self.run(operation), resource_key)

    def exit_outcome(self, outcome, resource_key, **extra):
        result = dict(changed=outcome.changed, actions=outcome.actions, **extra)
        result[resource_key] = outcome.resource or {}
        if self._diff:
            result["diff"] = outcome.diff
        self.exit_json(**result)
