# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  engine:
    description:
      - How to reach the engine database (PostgreSQL) that holds the desired state of the data center.
      - Control-plane modules run on the engine host (use C(delegate_to) the engine), where the
        defaults reach the database that the M(virtplane.kvm.engine_database) module and the
        C(virtplane.kvm.engine) role set up, with the password read from O(engine.password_file).
      - Set it once for a play with C(module_defaults) and the action group C(group/virtplane.kvm.engine).
    type: dict
    suboptions:
      host:
        description:
          - Database server host name or address, or the directory of its unix socket (a path starting with C(/)).
          - Falls back to the environment variable E(VIRTPLANE_ENGINE_HOST).
        type: str
        default: localhost
      port:
        description:
          - Database server port. Falls back to E(VIRTPLANE_ENGINE_PORT).
        type: int
        default: 5432
      database:
        description:
          - Name of the engine database. Falls back to E(VIRTPLANE_ENGINE_DATABASE).
        type: str
        default: virtplane
      user:
        description:
          - Database role of the engine. Falls back to E(VIRTPLANE_ENGINE_USER).
        type: str
        default: virtplane
      password:
        description:
          - Password of O(engine.user). Falls back to E(VIRTPLANE_ENGINE_PASSWORD).
          - When unset, the password is read from O(engine.password_file) if that file exists.
        type: str
      password_file:
        description:
          - File holding the password, as the engine role writes it (mode 0600, on the engine host only).
          - Falls back to E(VIRTPLANE_ENGINE_PASSWORD_FILE).
        type: str
        default: /etc/virtplane/engine-db/password
      sslmode:
        description:
          - libpq TLS mode for TCP connections. Falls back to E(VIRTPLANE_ENGINE_SSLMODE).
        type: str
        default: prefer
        choices: [disable, allow, prefer, require, verify-ca, verify-full]
      sslrootcert:
        description:
          - Absolute path of the CA certificate that signed the database server's, for O(engine.sslmode=verify-ca)
            and O(engine.sslmode=verify-full) (the engine role's C(engine_pki_dir)/cacert.pem when the engine
            takes network clients). Falls back to E(VIRTPLANE_ENGINE_SSLROOTCERT).
        type: str
        version_added: 0.6.0
      connect_timeout:
        description:
          - Seconds to wait for the database server to answer.
        type: int
        default: 10
requirements:
  - psycopg >= 3.1 (Python library) on the host the module runs on
"""
