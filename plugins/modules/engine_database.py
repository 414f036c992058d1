#!/usr/bin/python
# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: engine_database
short_description: Create the virtplane engine database and keep its schema current
version_added: 0.1.0
description:
  - Ensures the engine's PostgreSQL role (with its password), its database (owned by that role,
    closed to everyone else) and the engine schema.
  - An older schema is upgraded one migration at a time, each in its own transaction.
    A schema newer than this collection knows is refused and left untouched.
  - Connects as a PostgreSQL superuser; the C(virtplane.kvm.engine) role runs it as the C(postgres)
    system user over the local socket.
  - The password is sent as a SCRAM-SHA-256 verifier, never in clear text, and an unchanged
    password is recognized without being reset.
options:
  name:
    description:
      - Name of the engine database.
    type: str
    default: virtplane
  owner:
    description:
      - Role that owns the database and everything in it; the engine modules log in as this role.
    type: str
    default: virtplane
  owner_password:
    description:
      - Password of O(owner), at least 12 characters.
      - Exactly one of O(owner_password) and O(owner_password_file) is required.
    type: str
  owner_password_file:
    description:
      - File holding the password of O(owner). When it does not exist, a random password is
        generated and written there (mode 0600, owned by the user the module runs as), so the
        password is kept only on the engine host and never passes through the controller.
    type: str
  schema_version:
    description:
      - Schema version to bring the database to; the latest this collection knows when unset.
    type: int
  reservation_lease_seconds:
    description:
      - How long, in seconds, a reservation (the job of a module run working on an object) lives without a
        heartbeat before it counts as left by a run that died, and the next run to meet it finishes or rolls
        back its work. A live run beats every third of it. 5 to 3600.
    type: int
    default: 60
  allow_test_driver:
    description:
      - Whether hosts may be registered with libvirt's test driver (V(test:///default), or a node XML
        file), which simulates a host. Meant for trials and tests; a production engine leaves it off,
        so that a host URI can never make the engine read files of its own host.
      - Only this module, which logs in as the PostgreSQL superuser, changes it; the other modules
        read it.
    type: bool
    default: false
  login_host:
    description:
      - Superuser connection host, or the directory of the server's unix socket.
    type: str
    default: /var/run/postgresql
  login_port:
    description:
      - Superuser connection port.
    type: int
    default: 5432
  login_user:
    description:
      - PostgreSQL superuser to connect as.
    type: str
    default: postgres
  login_password:
    description:
      - Password of O(login_user); unneeded with peer authentication over the local socket.
    type: str
attributes:
  check_mode:
    support: full
    description: Reports the role, database and migrations that would be created or applied.
  diff_mode:
    support: none
    description: Reports actions and schema versions instead of a diff.
requirements:
  - psycopg >= 3.1 (Python library)
author:
  - virtplane.kvm maintainers (@virtplane)
"""

EXAMPLES = r"""
- name: Engine database with the latest schema, its password generated on the engine host
  virtplane.kvm.engine_database:
    owner_password_file: /etc/virtplane/engine-db/password
  become: true
  become_user: postgres
"""

RETURN = r"""
actions:
  description: What was done (or would be done in check mode).
  returned: always
  type: list
  elements: str
  sample:
    - create role virtplane
    - create database virtplane
    - "apply schema migration 1: data centers, clusters and hosts"
schema:
  description: Schema versions before and after, and the migrations applied.
  returned: always
  type: dict
  sample: {from_version: 0, to_version: 3, applied: ["1: data centers, clusters and hosts"]}
hba_file:
  description: Path of the server's pg_hba.conf, for the role to add its access rule.
  returned: always
  type: str
  sample: /etc/postgresql/15/main/pg_hba.conf
config_file:
  description: Path of the server's postgresql.conf, for the role to include its network settings.
  returned: always
  type: str
  sample: /etc/postgresql/15/main/postgresql.conf
  version_added: 0.6.0
server_version:
  description: Version of the PostgreSQL server.
  returned: always
  type: str
  sample: "15.18 (Debian 15.18-0+deb12u1)"
"""

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import VirtplaneError
from ansible_collections.virtplane.kvm.plugins.module_utils._module import StrictModule
from ansible_collections.virtplane.kvm.plugins.module_utils._validation import shown
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _db, _provision


def main():
    module = StrictModule(dict(
        name=dict(type="str", default="virtplane"),
        owner=dict(type="str", default="virtplane"),
        owner_password=dict(type="str", no_log=True),
        owner_password_file=dict(type="str", no_log=False),
        schema_version=dict(type="int"),
        login_host=dict(type="str", default="/var/run/postgresql"),
        login_port=dict(type="int", default=5432),
        login_user=dict(type="str", default="postgres"),
        login_password=dict(type="str", no_log=True),
        allow_test_driver=dict(type="bool", default=False),
        reservation_lease_seconds=dict(type="int", default=60),
    ), supports_check_mode=True, mutually_exclusive=[("owner_password", "owner_password_file")],
        required_one_of=[("owner_password", "owner_password_file")])
    if _db.PSYCOPG_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("psycopg (version 3)"), exception=_db.PSYCOPG_IMPORT_ERROR)
    p = module.params
    login = dict(host=p["login_host"], port=p["login_port"], user=p["login_user"], password=p["login_password"],
                 database="postgres")
    settings = {"allow_test_driver": p["allow_test_driver"],
                "reservation_lease_seconds": p["reservation_lease_seconds"]}
    try:
        # everything is checked before a password file is made or the server is asked anything
        _provision.validate_request(p["name"], p["owner"], p["owner_password"], p["schema_version"], settings)
        password, generated = p["owner_password"], False
        if password is None:
            password, generated = _provision.read_or_generate_password(p["owner_password_file"], module.check_mode)
        result = _provision.ensure_database(login, p["name"], p["owner"], password,
                                            p["schema_version"], module.check_mode, settings=settings)
        if generated:
            result["changed"] = True
            result["actions"].insert(0, "generate the password file %s" % p["owner_password_file"])
    except VirtplaneError as exc:
        module.fail_json(msg="Cannot set up the engine database %s: %s" % (shown(p["name"]), exc))
    except _db.DatabaseError as exc:
        module.fail_json(msg="Cannot set up the engine database %s: PostgreSQL refused: %s"
                         % (shown(p["name"]), _db.describe_error(exc)))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
