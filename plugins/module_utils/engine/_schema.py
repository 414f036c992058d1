# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The engine database schema, as an ordered list of migrations.

Each migration is applied in its own transaction and recorded in ``schema_migration``;
an older database is brought forward one step at a time, and a database newer than this
code is refused rather than guessed at.  Migrations live in Python (not .sql files) so
that they travel inside the module payload Ansible ships to the engine host.

The model is oVirt's: data center > cluster > host; storage domains and logical networks
belong to a data center and are realized on hosts; a VM is a definition plus at most one
running instance on one host.
"""

from __future__ import annotations

import collections

from ansible_collections.virtplane.kvm.plugins.module_utils._validation import NAME_PATTERN

Migration = collections.namedtuple("Migration", "version description sql")

HOST_STATUSES = ("Installing", "Up", "NonResponsive", "Maintenance", "PreparingForMaintenance",
                 "NonOperational")
# from schema 19 on: a host that stopped answering, within its grace period
HOST_STATUSES_HA = HOST_STATUSES + ("Connecting",)
FENCE_AGENTS = ("ipmilan", "redfish", "ssh", "lab")
RESILIENCE_POLICIES = ("migrate", "ha_only", "none")
VM_STATUSES = ("Down", "WaitForLaunch", "PoweringUp", "Up", "PoweringDown", "Paused", "Suspended",
               "MigratingFrom", "MigratingTo", "NotResponding", "RestartingHA", "Unknown")
SCHEDULING_POLICIES = ("none", "evenly_distributed", "power_saving", "vm_evenly_distributed")
MIGRATION_POLICIES = ("minimal_downtime", "post_copy", "suspend_workload", "legacy")
EVENT_SEVERITIES = ("normal", "warning", "error")


def _in(values):
    return "(%s)" % ", ".join("'%s'" % v for v in values)


_CORE = f"""
CREATE DOMAIN object_name AS text CHECK (VALUE ~ '{NAME_PATTERN}');

CREATE TABLE datacenter (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name          object_name NOT NULL UNIQUE,
    description   text NOT NULL DEFAULT '',
    storage_type  text NOT NULL DEFAULT 'shared' CHECK (storage_type IN ('shared', 'local')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE cluster (
    id                          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    datacenter_id               uuid NOT NULL REFERENCES datacenter (id) ON DELETE RESTRICT,
    name                        object_name NOT NULL UNIQUE,
    description                 text NOT NULL DEFAULT '',
    cpu_arch                    text NOT NULL DEFAULT 'x86_64',
    cpu_model                   text,
    scheduling_policy           text NOT NULL DEFAULT 'evenly_distributed'
                                CHECK (scheduling_policy IN {_in(SCHEDULING_POLICIES)}),
    scheduling_params           jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    memory_overcommit_percent   integer NOT NULL DEFAULT 100
                                CHECK (memory_overcommit_percent BETWEEN 100 AND 400),
    cpu_overcommit_ratio        numeric(5, 2) NOT NULL DEFAULT 4
                                CHECK (cpu_overcommit_ratio >= 1 AND cpu_overcommit_ratio <= 64),
    migration_policy            text NOT NULL DEFAULT 'minimal_downtime'
                                CHECK (migration_policy IN {_in(MIGRATION_POLICIES)}),
    migration_bandwidth_mbps    integer CHECK (migration_bandwidth_mbps > 0),
    migration_max_parallel      integer NOT NULL DEFAULT 2 CHECK (migration_max_parallel BETWEEN 1 AND 16),
    ha_reservation              boolean NOT NULL DEFAULT false,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cluster_datacenter_idx ON cluster (datacenter_id);

CREATE TABLE host (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    cluster_id          uuid NOT NULL REFERENCES cluster (id) ON DELETE RESTRICT,
    name                object_name NOT NULL UNIQUE,
    address             text,
    libvirt_uri         text NOT NULL,
    status              text NOT NULL DEFAULT 'Installing' CHECK (status IN {_in(HOST_STATUSES)}),
    status_reason       text NOT NULL DEFAULT '',
    status_changed_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at        timestamptz,
    hardware_uuid       text,
    hostname            text,
    hypervisor_type     text,
    domain_type         text CHECK (domain_type IN ('kvm', 'qemu', 'test')),
    libvirt_version     text,
    cpu_arch            text,
    cpu_model           text,
    cpu_vendor          text,
    cpu_sockets         integer,
    cpu_cores           integer,
    cpu_threads         integer,
    cpu_count           integer,
    cpu_mhz             integer,
    memory_mib          bigint,
    numa_cells          jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX host_cluster_idx ON host (cluster_id);
"""

_RESOURCES = f"""
CREATE TABLE storage_domain (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    datacenter_id   uuid NOT NULL REFERENCES datacenter (id) ON DELETE RESTRICT,
    name            object_name NOT NULL,
    type            text NOT NULL CHECK (type IN ('dir', 'posixfs', 'nfs', 'logical', 'iscsi', 'rbd')),
    params          jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    state           text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'maintenance')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (datacenter_id, name)
);

CREATE TABLE storage_domain_host (
    storage_domain_id   uuid NOT NULL REFERENCES storage_domain (id) ON DELETE CASCADE,
    host_id             uuid NOT NULL REFERENCES host (id) ON DELETE CASCADE,
    pool_name           text NOT NULL,
    active              boolean NOT NULL DEFAULT false,
    capacity_bytes      bigint,
    allocation_bytes    bigint,
    available_bytes     bigint,
    error               text NOT NULL DEFAULT '',
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (storage_domain_id, host_id)
);

CREATE TABLE logical_network (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    datacenter_id   uuid NOT NULL REFERENCES datacenter (id) ON DELETE RESTRICT,
    name            object_name NOT NULL,
    description     text NOT NULL DEFAULT '',
    mode            text NOT NULL DEFAULT 'bridge' CHECK (mode IN ('bridge', 'nat', 'isolated')),
    vlan_id         integer CHECK (vlan_id BETWEEN 1 AND 4094),
    vxlan_vni       integer CHECK (vxlan_vni BETWEEN 1 AND 16777215),
    mtu             integer NOT NULL DEFAULT 1500 CHECK (mtu BETWEEN 68 AND 9216),
    subnet          cidr,
    gateway         inet,
    bridge          text NOT NULL CHECK (bridge ~ '^[A-Za-z0-9_.-]{{1,15}}$'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (datacenter_id, name),
    UNIQUE (datacenter_id, bridge),
    CHECK (vlan_id IS NULL OR vxlan_vni IS NULL)
);

CREATE TABLE cluster_network (
    cluster_id      uuid NOT NULL REFERENCES cluster (id) ON DELETE CASCADE,
    network_id      uuid NOT NULL REFERENCES logical_network (id) ON DELETE RESTRICT,
    required        boolean NOT NULL DEFAULT true,
    PRIMARY KEY (cluster_id, network_id)
);

CREATE TABLE host_network (
    host_id         uuid NOT NULL REFERENCES host (id) ON DELETE CASCADE,
    network_id      uuid NOT NULL REFERENCES logical_network (id) ON DELETE CASCADE,
    nic             text,
    realized        boolean NOT NULL DEFAULT false,
    error           text NOT NULL DEFAULT '',
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (host_id, network_id)
);

CREATE TABLE template (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    datacenter_id   uuid NOT NULL REFERENCES datacenter (id) ON DELETE RESTRICT,
    name            object_name NOT NULL,
    description     text NOT NULL DEFAULT '',
    spec            jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (datacenter_id, name)
);

CREATE TABLE vm (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    cluster_id          uuid NOT NULL REFERENCES cluster (id) ON DELETE RESTRICT,
    template_id         uuid REFERENCES template (id) ON DELETE SET NULL,
    name                object_name NOT NULL UNIQUE,
    description         text NOT NULL DEFAULT '',
    vcpus               integer NOT NULL CHECK (vcpus BETWEEN 1 AND 512),
    memory_mib          bigint NOT NULL CHECK (memory_mib >= 16),
    spec                jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    desired_state       text NOT NULL DEFAULT 'stopped'
                        CHECK (desired_state IN ('running', 'stopped', 'suspended')),
    status              text NOT NULL DEFAULT 'Down' CHECK (status IN {_in(VM_STATUSES)}),
    status_reason       text NOT NULL DEFAULT '',
    run_host_id         uuid REFERENCES host (id) ON DELETE RESTRICT,
    migrating_to_host_id uuid REFERENCES host (id) ON DELETE RESTRICT,
    reserved_vcpus      integer NOT NULL DEFAULT 0,
    reserved_memory_mib bigint NOT NULL DEFAULT 0,
    ha_enabled          boolean NOT NULL DEFAULT false,
    ha_priority         integer NOT NULL DEFAULT 0,
    tags                text[] NOT NULL DEFAULT '{{}}',
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (status = 'Down' OR status = 'Suspended' OR run_host_id IS NOT NULL)
);
CREATE INDEX vm_cluster_idx ON vm (cluster_id);
CREATE INDEX vm_run_host_idx ON vm (run_host_id) WHERE run_host_id IS NOT NULL;

CREATE TABLE disk (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    storage_domain_id   uuid NOT NULL REFERENCES storage_domain (id) ON DELETE RESTRICT,
    name                object_name NOT NULL,
    format              text NOT NULL CHECK (format IN ('qcow2', 'raw')),
    preallocated        boolean NOT NULL DEFAULT false,
    size_bytes          bigint NOT NULL CHECK (size_bytes > 0),
    volume_name         text NOT NULL,
    backing_disk_id     uuid REFERENCES disk (id) ON DELETE RESTRICT,
    status              text NOT NULL DEFAULT 'ok' CHECK (status IN ('ok', 'locked', 'illegal')),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (storage_domain_id, name)
);

CREATE TABLE vm_disk (
    vm_id       uuid NOT NULL REFERENCES vm (id) ON DELETE CASCADE,
    disk_id     uuid NOT NULL UNIQUE REFERENCES disk (id) ON DELETE RESTRICT,
    bus         text NOT NULL DEFAULT 'virtio' CHECK (bus IN ('virtio', 'scsi', 'sata', 'ide')),
    target      text NOT NULL,
    bootable    boolean NOT NULL DEFAULT false,
    PRIMARY KEY (vm_id, disk_id),
    UNIQUE (vm_id, target)
);

CREATE TABLE vm_nic (
    vm_id       uuid NOT NULL REFERENCES vm (id) ON DELETE CASCADE,
    name        object_name NOT NULL,
    network_id  uuid NOT NULL REFERENCES logical_network (id) ON DELETE RESTRICT,
    mac         macaddr NOT NULL UNIQUE,
    model       text NOT NULL DEFAULT 'virtio',
    PRIMARY KEY (vm_id, name)
);

CREATE TABLE snapshot (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    vm_id       uuid NOT NULL REFERENCES vm (id) ON DELETE CASCADE,
    name        object_name NOT NULL,
    description text NOT NULL DEFAULT '',
    with_memory boolean NOT NULL DEFAULT false,
    state       text NOT NULL DEFAULT 'ok' CHECK (state IN ('ok', 'locked', 'in_preview', 'broken')),
    disks       jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (vm_id, name)
);

CREATE TABLE affinity_group (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    cluster_id      uuid NOT NULL REFERENCES cluster (id) ON DELETE CASCADE,
    name            object_name NOT NULL,
    vm_rule         text CHECK (vm_rule IN ('positive', 'negative')),
    vm_enforcing    boolean NOT NULL DEFAULT false,
    host_rule       text CHECK (host_rule IN ('positive', 'negative')),
    host_enforcing  boolean NOT NULL DEFAULT false,
    priority        integer NOT NULL DEFAULT 1,
    UNIQUE (cluster_id, name)
);

CREATE TABLE affinity_group_vm (
    group_id    uuid NOT NULL REFERENCES affinity_group (id) ON DELETE CASCADE,
    vm_id       uuid NOT NULL REFERENCES vm (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, vm_id)
);

CREATE TABLE affinity_group_host (
    group_id    uuid NOT NULL REFERENCES affinity_group (id) ON DELETE CASCADE,
    host_id     uuid NOT NULL REFERENCES host (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, host_id)
);
"""

_AUDIT = f"""
CREATE TABLE event (
    id              bigserial PRIMARY KEY,
    occurred_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    severity        text NOT NULL CHECK (severity IN {_in(EVENT_SEVERITIES)}),
    code            text NOT NULL,
    message         text NOT NULL,
    object_type     text,
    object_id       uuid,
    object_name     text,
    datacenter_name text,
    cluster_name    text,
    host_name       text,
    vm_name         text,
    actor           text NOT NULL DEFAULT '',
    correlation_id  text,
    details         jsonb NOT NULL DEFAULT '{{}}'::jsonb
);
CREATE INDEX event_occurred_idx ON event (occurred_at DESC);
CREATE INDEX event_object_idx ON event (object_type, object_name);

CREATE TABLE job (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    action          text NOT NULL,
    description     text NOT NULL DEFAULT '',
    status          text NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'finished', 'failed', 'aborted')),
    object_type     text,
    object_id       uuid,
    object_name     text,
    progress        integer NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    actor           text NOT NULL DEFAULT '',
    correlation_id  text,
    started_at      timestamptz NOT NULL DEFAULT now(),
    ended_at        timestamptz,
    result          jsonb NOT NULL DEFAULT '{{}}'::jsonb
);
CREATE INDEX job_running_idx ON job (status) WHERE status = 'running';
"""

_HOST_DOMAIN_TYPE_SETTING = """
ALTER TABLE host ADD COLUMN domain_type_setting text NOT NULL DEFAULT 'auto'
    CHECK (domain_type_setting IN ('auto', 'kvm', 'qemu'));
"""

_ATTACHMENTS = """
-- a storage domain is attached to the clusters whose hosts use it; a 'dir' domain lives on one host
CREATE TABLE storage_domain_cluster (
    storage_domain_id   uuid NOT NULL REFERENCES storage_domain (id) ON DELETE CASCADE,
    cluster_id          uuid NOT NULL REFERENCES cluster (id) ON DELETE RESTRICT,
    PRIMARY KEY (storage_domain_id, cluster_id)
);
ALTER TABLE storage_domain ADD COLUMN description text NOT NULL DEFAULT '';
ALTER TABLE storage_domain ADD COLUMN host_id uuid REFERENCES host (id) ON DELETE RESTRICT;
-- the NIC of a host that carries its logical networks (oVirt's "setup networks" in its simplest form)
ALTER TABLE host ADD COLUMN network_nic text CHECK (network_nic ~ '^[A-Za-z0-9_.-]{1,15}$');
ALTER TABLE host_network ADD COLUMN libvirt_name text;
-- an iSCSI domain offers fixed LUNs: a disk there is a LUN taken over, not a volume created
ALTER TABLE disk ADD COLUMN lun integer;
"""

# A URI's password, as it may have been stored before URIs with one were refused.
_URI_PASSWORD = r"([A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*):[^/@\s]*@"

_SETTINGS = r"""
-- what the engine allows, set by whoever installs it (the engine_database module), not by its users
CREATE TABLE engine_setting (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z_]{1,64}$'),
    value       jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO engine_setting (name, value) VALUES ('allow_test_driver', 'false');

-- libvirt never took a password from a URI; one stored before such URIs were refused goes,
-- wherever it was written (the host's URI, its status, the audit log)
UPDATE host SET libvirt_uri = regexp_replace(libvirt_uri, '""" + _URI_PASSWORD + r"""', '\1@', 'g')
    WHERE libvirt_uri ~ '""" + _URI_PASSWORD + r"""';
UPDATE host SET status_reason = regexp_replace(status_reason, '""" + _URI_PASSWORD + r"""', '\1:***@', 'g')
    WHERE status_reason ~ '""" + _URI_PASSWORD + r"""';
UPDATE event SET message = regexp_replace(message, '""" + _URI_PASSWORD + r"""', '\1:***@', 'g'),
                 details = regexp_replace(details::text, '""" + _URI_PASSWORD + r"""', '\1:***@', 'g')::jsonb
    WHERE message ~ '""" + _URI_PASSWORD + r"""' OR details::text ~ '""" + _URI_PASSWORD + r"""';

-- a libvirt error used to be kept whole: an XML parse error's second line quotes the document
-- (for the test driver, any file on the engine host); only the first line is kept now
UPDATE host SET status_reason = split_part(status_reason, E'\n', 1) WHERE status_reason LIKE E'%\n%';
UPDATE storage_domain_host SET error = split_part(error, E'\n', 1) WHERE error LIKE E'%\n%';
UPDATE host_network SET error = split_part(error, E'\n', 1) WHERE error LIKE E'%\n%';
UPDATE event SET message = split_part(message, E'\n', 1) WHERE message LIKE E'%\n%';
"""

# A MAC range of its own for each data center (2^16 addresses under the locally administered 56:6f
# prefix oVirt uses), derived from its id so that two data centers on one L2 do not collide.
DEFAULT_MAC_POOL_SQL = ("('56:6f:' || substr(md5({id}::text), 1, 2) || ':' || substr(md5({id}::text), 3, 2)"
                        " || ':00:00')::macaddr", "('56:6f:' || substr(md5({id}::text), 1, 2) || ':'"
                        " || substr(md5({id}::text), 3, 2) || ':ff:ff')::macaddr")
JOB_STATUSES = ("running", "finished", "failed", "aborted")

_ENGINE_CORE = f"""
-- long work is reserved, done with no lock held, then confirmed: a job row is the reservation,
-- with its owner (host:pid of the module run) and a heartbeat; a reservation whose heartbeat is
-- older than its lease belongs to a run that died, and whoever meets it finishes or rolls it back
ALTER TABLE job ADD COLUMN owner text NOT NULL DEFAULT '';
ALTER TABLE job ADD COLUMN heartbeat_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE job ADD COLUMN lease_seconds integer NOT NULL DEFAULT 60 CHECK (lease_seconds BETWEEN 1 AND 3600);
ALTER TABLE job ADD COLUMN datacenter_name text;
ALTER TABLE job ADD COLUMN plan jsonb NOT NULL DEFAULT '{{}}'::jsonb;
CREATE INDEX job_object_idx ON job (object_type, object_id);
ALTER TABLE event ADD COLUMN job_id uuid;
INSERT INTO engine_setting (name, value) VALUES ('reservation_lease_seconds', '60');

-- the reservation an object is under (its row 'locked' while a job works on it)
ALTER TABLE disk ADD COLUMN job_id uuid REFERENCES job (id) ON DELETE SET NULL;
ALTER TABLE storage_domain ADD COLUMN job_id uuid REFERENCES job (id) ON DELETE SET NULL;
ALTER TABLE logical_network ADD COLUMN job_id uuid REFERENCES job (id) ON DELETE SET NULL;
ALTER TABLE host ADD COLUMN job_id uuid REFERENCES job (id) ON DELETE SET NULL;

-- a VM's definition, its runtime and its statistics apart (oVirt's vm_static, vm_dynamic and
-- vm_statistics): the monitor writes runtime and samples without contending with a definition change
CREATE TABLE vm_runtime (
    vm_id                uuid PRIMARY KEY REFERENCES vm (id) ON DELETE CASCADE,
    status               text NOT NULL DEFAULT 'Down' CHECK (status IN {_in(VM_STATUSES)}),
    status_reason        text NOT NULL DEFAULT '',
    status_changed_at    timestamptz NOT NULL DEFAULT now(),
    run_host_id          uuid REFERENCES host (id) ON DELETE RESTRICT,
    migrating_to_host_id uuid REFERENCES host (id) ON DELETE RESTRICT,
    reserved_vcpus       integer NOT NULL DEFAULT 0 CHECK (reserved_vcpus >= 0),
    reserved_memory_mib  bigint NOT NULL DEFAULT 0 CHECK (reserved_memory_mib >= 0),
    job_id               uuid REFERENCES job (id) ON DELETE SET NULL,
    -- where a suspended VM's memory was saved: a transient domain has no libvirt managed save
    saved_state          jsonb,
    console              jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    guest_addresses      jsonb NOT NULL DEFAULT '[]'::jsonb,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CHECK (status IN ('Down', 'Suspended') OR run_host_id IS NOT NULL),
    CHECK (saved_state IS NULL OR status = 'Suspended')
);
INSERT INTO vm_runtime (vm_id, status, status_reason, run_host_id, migrating_to_host_id, reserved_vcpus,
                        reserved_memory_mib)
    SELECT id, status, status_reason, run_host_id, migrating_to_host_id, reserved_vcpus, reserved_memory_mib FROM vm;
ALTER TABLE vm DROP COLUMN status, DROP COLUMN status_reason, DROP COLUMN run_host_id,
    DROP COLUMN migrating_to_host_id, DROP COLUMN reserved_vcpus, DROP COLUMN reserved_memory_mib;
CREATE INDEX vm_runtime_host_idx ON vm_runtime (run_host_id) WHERE run_host_id IS NOT NULL;
CREATE INDEX vm_runtime_migrating_idx ON vm_runtime (migrating_to_host_id) WHERE migrating_to_host_id IS NOT NULL;

CREATE TABLE vm_statistics (
    vm_id               uuid PRIMARY KEY REFERENCES vm (id) ON DELETE CASCADE,
    sampled_at          timestamptz NOT NULL DEFAULT now(),
    cpu_percent         numeric(6, 2),
    memory_used_mib     bigint,
    balloon_mib         bigint,
    disk_read_bytes     bigint,
    disk_write_bytes    bigint,
    net_rx_bytes        bigint,
    net_tx_bytes        bigint
);

-- what a host offers beyond its CPU model (libvirt's host CPU features), for migration compatibility
ALTER TABLE host ADD COLUMN cpu_features jsonb NOT NULL DEFAULT '[]'::jsonb;
CREATE TABLE host_statistics (
    host_id             uuid PRIMARY KEY REFERENCES host (id) ON DELETE CASCADE,
    sampled_at          timestamptz NOT NULL DEFAULT now(),
    cpu_percent         numeric(6, 2),
    memory_free_mib     bigint,
    memory_used_mib     bigint,
    vms_running         integer,
    load_average        numeric(8, 2)
);

-- MAC addresses of VM NICs come from a range of their data center
CREATE TABLE mac_pool (
    datacenter_id   uuid PRIMARY KEY REFERENCES datacenter (id) ON DELETE CASCADE,
    range_start     macaddr NOT NULL,
    range_end       macaddr NOT NULL,
    CHECK (range_start <= range_end)
);
INSERT INTO mac_pool (datacenter_id, range_start, range_end)
    SELECT id, {DEFAULT_MAC_POOL_SQL[0].format(id="id")}, {DEFAULT_MAC_POOL_SQL[1].format(id="id")} FROM datacenter;
"""

_VM_RUNTIME_CONFIG = """
-- what a running VM was started with (and what was applied to it live since): the definition's fields
-- that differ from it are the VM's pending_restart
ALTER TABLE vm_runtime ADD COLUMN running_config jsonb;
"""

_VM_NIC_ORDER = """
-- a VM's NICs in the order they were given (the guest sees them in that order)
ALTER TABLE vm_nic ADD COLUMN position integer NOT NULL DEFAULT 0;
"""

_TEMPLATE_DISKS = """
-- a template's disks are disks of their own (copies made when it was created), owned by it
ALTER TABLE disk ADD COLUMN template_id uuid REFERENCES template (id) ON DELETE RESTRICT;
ALTER TABLE template ADD COLUMN job_id uuid REFERENCES job (id) ON DELETE SET NULL;
"""

_SNAPSHOTS = """
-- a snapshot as the engine took it: where its data lives (internal qcow2 snapshots, with or without
-- the guest's memory), what the VM was (running or stopped, and its configuration then), libvirt's
-- description of it (metadata a transient domain loses when it ends, given back before a revert or a
-- delete), and the job that holds it while it is made, reverted to or deleted
ALTER TABLE snapshot ADD COLUMN kind text NOT NULL DEFAULT 'internal' CHECK (kind IN ('internal'));
ALTER TABLE snapshot ADD COLUMN vm_status text NOT NULL DEFAULT 'Down';
ALTER TABLE snapshot ADD COLUMN config jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE snapshot ADD COLUMN xml text NOT NULL DEFAULT '';
ALTER TABLE snapshot ADD COLUMN host_name text;
ALTER TABLE snapshot ADD COLUMN job_id uuid REFERENCES job (id) ON DELETE SET NULL;
"""

_HOST_CAPACITY = """
-- what the scheduler may give a host's VMs: the memory and CPUs the host keeps for itself (oVirt's
-- reserved host memory), and an administrator's cap below what libvirt reports (hosts that share one
-- machine, as the lab's do); a cap of 0 schedules all that is reported
ALTER TABLE host ADD COLUMN reserved_memory_mib bigint NOT NULL DEFAULT 256 CHECK (reserved_memory_mib >= 0);
ALTER TABLE host ADD COLUMN reserved_cpus integer NOT NULL DEFAULT 0 CHECK (reserved_cpus >= 0);
ALTER TABLE host ADD COLUMN schedulable_memory_mib bigint NOT NULL DEFAULT 0 CHECK (schedulable_memory_mib >= 0);
ALTER TABLE host ADD COLUMN schedulable_cpus integer NOT NULL DEFAULT 0 CHECK (schedulable_cpus >= 0);
"""

_PLACEMENT_CHANGES = """
-- what changed for the scheduler, so that an engine that keeps a cluster's placement snapshot reads
-- again only the hosts that changed since: one row per change (NULL cluster: whichever it is in; NULL
-- host: every host), stamped with its transaction's id; a reader asks for the rows its last snapshot
-- did not see (pg_visible_in_snapshot), which never misses a transaction that commits late
CREATE TABLE placement_change (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    cluster_id  uuid,
    host_id     uuid,
    xid         xid8 NOT NULL DEFAULT pg_current_xact_id(),
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX placement_change_xid_idx ON placement_change (xid);
CREATE INDEX placement_change_created_idx ON placement_change (created_at);

CREATE FUNCTION placement_touch_host(changed uuid) RETURNS void LANGUAGE sql AS $$
    INSERT INTO placement_change (cluster_id, host_id)
    SELECT (SELECT h.cluster_id FROM host h WHERE h.id = changed), changed WHERE changed IS NOT NULL
$$;

CREATE FUNCTION placement_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'host' THEN
        IF TG_OP <> 'INSERT' THEN
            INSERT INTO placement_change (cluster_id, host_id) VALUES (OLD.cluster_id, OLD.id);
        END IF;
        IF TG_OP <> 'DELETE' THEN
            INSERT INTO placement_change (cluster_id, host_id) VALUES (NEW.cluster_id, NEW.id);
        END IF;
    ELSIF TG_TABLE_NAME = 'vm_runtime' THEN
        IF TG_OP <> 'INSERT' THEN
            PERFORM placement_touch_host(OLD.run_host_id);
        END IF;
        IF TG_OP <> 'DELETE' THEN
            PERFORM placement_touch_host(NEW.run_host_id);
        END IF;
    ELSIF TG_TABLE_NAME = 'vm' THEN
        PERFORM placement_touch_host((SELECT run_host_id FROM vm_runtime WHERE vm_id = NEW.id));
    ELSIF TG_TABLE_NAME IN ('host_network', 'storage_domain_host', 'host_statistics') THEN
        IF TG_OP <> 'INSERT' THEN
            PERFORM placement_touch_host(OLD.host_id);
        END IF;
        IF TG_OP <> 'DELETE' THEN
            PERFORM placement_touch_host(NEW.host_id);
        END IF;
    ELSIF TG_TABLE_NAME = 'cluster' THEN
        INSERT INTO placement_change (cluster_id, host_id) VALUES (NEW.id, NULL);
    ELSIF TG_TABLE_NAME = 'affinity_group' THEN
        IF TG_OP <> 'INSERT' THEN
            INSERT INTO placement_change (cluster_id, host_id) VALUES (OLD.cluster_id, NULL);
        END IF;
        IF TG_OP <> 'DELETE' THEN
            INSERT INTO placement_change (cluster_id, host_id) VALUES (NEW.cluster_id, NULL);
        END IF;
    ELSE  -- a group's members, storage domains, logical networks: every host of every cluster, rarely
        INSERT INTO placement_change (cluster_id, host_id) VALUES (NULL, NULL);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER placement_host AFTER INSERT OR DELETE OR UPDATE ON host
    FOR EACH ROW EXECUTE FUNCTION placement_changed();
CREATE TRIGGER placement_vm_runtime AFTER INSERT OR DELETE ON vm_runtime
    FOR EACH ROW EXECUTE FUNCTION placement_changed();
CREATE TRIGGER placement_vm_runtime_update AFTER UPDATE OF run_host_id, reserved_vcpus, reserved_memory_mib
    ON vm_runtime FOR EACH ROW WHEN (OLD.run_host_id IS DISTINCT FROM NEW.run_host_id
        OR OLD.reserved_vcpus <> NEW.reserved_vcpus OR OLD.reserved_memory_mib <> NEW.reserved_memory_mib)
    EXECUTE FUNCTION placement_changed();
CREATE TRIGGER placement_vm AFTER UPDATE OF name, cluster_id, ha_enabled ON vm
    FOR EACH ROW WHEN (OLD.name <> NEW.name OR OLD.cluster_id <> NEW.cluster_id OR OLD.ha_enabled <> NEW.ha_enabled)
    EXECUTE FUNCTION placement_changed();
CREATE TRIGGER placement_host_network AFTER INSERT OR DELETE OR UPDATE ON host_network
    FOR EACH ROW EXECUTE FUNCTION placement_changed();
CREATE TRIGGER placement_storage_domain_host AFTER INSERT OR DELETE OR UPDATE ON storage_domain_host
    FOR EACH ROW EXECUTE FUNCTION placement_changed();
CREATE TRIGGER placement_host_statistics AFTER INSERT OR DELETE OR UPDATE OF cpu_percent ON host_statistics
    FOR EACH ROW EXECUTE FUNCTION placement_changed();
CREATE TRIGGER placement_cluster AFTER UPDATE ON cluster
    FOR EACH ROW EXECUTE FUNCTION placement_changed();
CREATE TRIGGER placement_affinity_group AFTER INSERT OR DELETE OR UPDATE ON affinity_group
    FOR EACH ROW EXECUTE FUNCTION placement_changed();
CREATE TRIGGER placement_affinity_group_vm AFTER INSERT OR DELETE OR UPDATE ON affinity_group_vm
    FOR EACH STATEMENT EXECUTE FUNCTION placement_changed();
CREATE TRIGGER placement_affinity_group_host AFTER INSERT OR DELETE OR UPDATE ON affinity_group_host
    FOR EACH STATEMENT EXECUTE FUNCTION placement_changed();
CREATE TRIGGER placement_storage_domain AFTER UPDATE OF name, state ON storage_domain
    FOR EACH STATEMENT EXECUTE FUNCTION placement_changed();
CREATE TRIGGER placement_logical_network AFTER UPDATE OF name ON logical_network
    FOR EACH STATEMENT EXECUTE FUNCTION placement_changed();
"""

# A VM's reservation arriving on a host (sign 1) or leaving it (sign -1) is logged with what it holds, so
# that a kept snapshot applies the difference instead of reading the host again (most changes of a busy
# cluster are these). A row without a sign still means: read the host again.
_PLACEMENT_DELTAS = """
ALTER TABLE placement_change ADD COLUMN vm_name text, ADD COLUMN memory_mib bigint, ADD COLUMN vcpus integer,
    ADD COLUMN ha boolean, ADD COLUMN sign smallint;

CREATE FUNCTION placement_hold(changed uuid, held_by uuid, memory bigint, cpus integer, direction smallint)
RETURNS void LANGUAGE sql AS $$
    -- a VM already gone (its runtime removed with it) leaves a plain change: the host is read again
    INSERT INTO placement_change (cluster_id, host_id, vm_name, memory_mib, vcpus, ha, sign)
    SELECT h.cluster_id, h.id, v.name, COALESCE(memory, 0), COALESCE(cpus, 0), v.ha_enabled,
           CASE WHEN v.id IS NULL THEN NULL ELSE direction END
    FROM host h LEFT JOIN vm v ON v.id = held_by WHERE h.id = changed
$$;

-- the VM runtime's triggers log differences from now on (placement_changed keeps the rest)
CREATE FUNCTION placement_runtime_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' AND OLD.run_host_id IS NOT NULL THEN
        PERFORM placement_hold(OLD.run_host_id, OLD.vm_id, OLD.reserved_memory_mib, OLD.reserved_vcpus, -1::smallint);
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.run_host_id IS NOT NULL THEN
        PERFORM placement_hold(NEW.run_host_id, NEW.vm_id, NEW.reserved_memory_mib, NEW.reserved_vcpus, 1::smallint);
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER placement_vm_runtime ON vm_runtime;
CREATE TRIGGER placement_vm_runtime AFTER INSERT OR DELETE ON vm_runtime
    FOR EACH ROW EXECUTE FUNCTION placement_runtime_changed();

-- a difference is a difference when one side is NULL too
DROP TRIGGER placement_vm_runtime_update ON vm_runtime;
CREATE TRIGGER placement_vm_runtime_update AFTER UPDATE OF run_host_id, reserved_vcpus, reserved_memory_mib
    ON vm_runtime FOR EACH ROW WHEN (OLD.run_host_id IS DISTINCT FROM NEW.run_host_id
        OR OLD.reserved_vcpus IS DISTINCT FROM NEW.reserved_vcpus
        OR OLD.reserved_memory_mib IS DISTINCT FROM NEW.reserved_memory_mib)
    EXECUTE FUNCTION placement_runtime_changed();
"""

# the named CPU models a guest can be given on the host (libvirt's domain capabilities); NULL: unknown
_HOST_CPU_MODELS = """
ALTER TABLE host ADD COLUMN cpu_models jsonb;
"""

# the host's CPU counters as last read (a load is the busy share of the time between two readings), and the
# loads of the last day, so that the balancer acts on a load that held for the policy's duration_minutes
_HOST_LOAD_HISTORY = """
ALTER TABLE host_statistics ADD COLUMN cpu_busy_ns bigint, ADD COLUMN cpu_total_ns bigint;
CREATE TABLE host_load_sample (
    host_id     uuid NOT NULL REFERENCES host (id) ON DELETE CASCADE,
    sampled_at  timestamptz NOT NULL,
    cpu_percent numeric(6, 2) NOT NULL,
    PRIMARY KEY (host_id, sampled_at)
);
"""

# The VM runtime's trigger writes the log itself: a SQL function called from PL/pgSQL is planned again on every
# call, and this trigger runs on every reservation, under the cluster's lock.
_PLACEMENT_TRIGGER_INLINE = """
CREATE OR REPLACE FUNCTION placement_runtime_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- a VM already gone (its runtime removed with it) leaves a plain change: the host is read again
    IF TG_OP <> 'INSERT' AND OLD.run_host_id IS NOT NULL THEN
        INSERT INTO placement_change (cluster_id, host_id, vm_name, memory_mib, vcpus, ha, sign)
        SELECT h.cluster_id, h.id, v.name, COALESCE(OLD.reserved_memory_mib, 0), COALESCE(OLD.reserved_vcpus, 0),
               v.ha_enabled, CASE WHEN v.id IS NULL THEN NULL ELSE -1 END
        FROM host h LEFT JOIN vm v ON v.id = OLD.vm_id WHERE h.id = OLD.run_host_id;
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.run_host_id IS NOT NULL THEN
        INSERT INTO placement_change (cluster_id, host_id, vm_name, memory_mib, vcpus, ha, sign)
        SELECT h.cluster_id, h.id, v.name, COALESCE(NEW.reserved_memory_mib, 0), COALESCE(NEW.reserved_vcpus, 0),
               v.ha_enabled, CASE WHEN v.id IS NULL THEN NULL ELSE 1 END
        FROM host h LEFT JOIN vm v ON v.id = NEW.vm_id WHERE h.id = NEW.run_host_id;
    END IF;
    RETURN NULL;
END
$$;
"""

# Live migrations: each one's record (history, the per-host limits of concurrent migrations), and the host a
# migrating VM goes to holds its reservation too until the migration ends (as oVirt's pending resources)
_MIGRATIONS = """
CREATE TABLE migration (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    vm_id               uuid REFERENCES vm (id) ON DELETE SET NULL,
    vm_name             text NOT NULL,
    source_host_id      uuid REFERENCES host (id) ON DELETE SET NULL,
    destination_host_id uuid REFERENCES host (id) ON DELETE SET NULL,
    source_host         text NOT NULL,
    destination_host    text NOT NULL,
    policy              text NOT NULL,
    bandwidth_mibps     integer,
    job_id              uuid REFERENCES job (id) ON DELETE SET NULL,
    status              text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done', 'failed')),
    reason              text NOT NULL DEFAULT '',
    started_at          timestamptz NOT NULL DEFAULT now(),
    ended_at            timestamptz,
    total_ms            integer,
    downtime_ms         integer,
    transferred_mib     numeric(12, 1),
    postcopy            boolean NOT NULL DEFAULT false
);
CREATE INDEX migration_running_source_idx ON migration (source_host_id) WHERE status = 'running';
CREATE INDEX migration_running_destination_idx ON migration (destination_host_id) WHERE status = 'running';
CREATE INDEX migration_vm_idx ON migration (vm_name, started_at);

CREATE OR REPLACE FUNCTION placement_runtime_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR TG_OP = 'DELETE' OR OLD.run_host_id IS DISTINCT FROM NEW.run_host_id
            OR OLD.reserved_vcpus IS DISTINCT FROM NEW.reserved_vcpus
            OR OLD.reserved_memory_mib IS DISTINCT FROM NEW.reserved_memory_mib THEN
        -- a VM already gone (its runtime removed with it) leaves a plain change: the host is read again
        IF TG_OP <> 'INSERT' AND OLD.run_host_id IS NOT NULL THEN
            INSERT INTO placement_change (cluster_id, host_id, vm_name, memory_mib, vcpus, ha, sign)
            SELECT h.cluster_id, h.id, v.name, COALESCE(OLD.reserved_memory_mib, 0), COALESCE(OLD.reserved_vcpus, 0),
                   v.ha_enabled, CASE WHEN v.id IS NULL THEN NULL ELSE -1 END
            FROM host h LEFT JOIN vm v ON v.id = OLD.vm_id WHERE h.id = OLD.run_host_id;
        END IF;
        IF TG_OP <> 'DELETE' AND NEW.run_host_id IS NOT NULL THEN
            INSERT INTO placement_change (cluster_id, host_id, vm_name, memory_mib, vcpus, ha, sign)
            SELECT h.cluster_id, h.id, v.name, COALESCE(NEW.reserved_memory_mib, 0), COALESCE(NEW.reserved_vcpus, 0),
                   v.ha_enabled, CASE WHEN v.id IS NULL THEN NULL ELSE 1 END
            FROM host h LEFT JOIN vm v ON v.id = NEW.vm_id WHERE h.id = NEW.run_host_id;
        END IF;
    END IF;
    -- the host a migration goes to (its committed sums count the VM): read again when that starts or ends
    IF TG_OP <> 'INSERT' AND OLD.migrating_to_host_id IS NOT NULL
            AND (TG_OP = 'DELETE' OR OLD.migrating_to_host_id IS DISTINCT FROM NEW.migrating_to_host_id
                 OR OLD.reserved_vcpus IS DISTINCT FROM NEW.reserved_vcpus
                 OR OLD.reserved_memory_mib IS DISTINCT FROM NEW.reserved_memory_mib) THEN
        PERFORM placement_touch_host(OLD.migrating_to_host_id);
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.migrating_to_host_id IS NOT NULL
            AND (TG_OP = 'INSERT' OR OLD.migrating_to_host_id IS DISTINCT FROM NEW.migrating_to_host_id) THEN
        PERFORM placement_touch_host(NEW.migrating_to_host_id);
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER placement_vm_runtime_update ON vm_runtime;
CREATE TRIGGER placement_vm_runtime_update
    AFTER UPDATE OF run_host_id, migrating_to_host_id, reserved_vcpus, reserved_memory_mib
    ON vm_runtime FOR EACH ROW WHEN (OLD.run_host_id IS DISTINCT FROM NEW.run_host_id
        OR OLD.migrating_to_host_id IS DISTINCT FROM NEW.migrating_to_host_id
        OR OLD.reserved_vcpus IS DISTINCT FROM NEW.reserved_vcpus
        OR OLD.reserved_memory_mib IS DISTINCT FROM NEW.reserved_memory_mib)
    EXECUTE FUNCTION placement_runtime_changed();
"""

# High availability: the monitor's view of each host (Connecting within a grace period, when it stopped
# answering, when it was fenced), how a host is fenced, the HA restart of a VM (attempts and when the next is
# due), each cluster's resilience policy, and the lease the active monitor holds
_HIGH_AVAILABILITY = f"""
ALTER TABLE host DROP CONSTRAINT host_status_check;
ALTER TABLE host ADD CONSTRAINT host_status_check CHECK (status IN {_in(HOST_STATUSES_HA)});
ALTER TABLE host ADD COLUMN fence_agent text CHECK (fence_agent IN {_in(FENCE_AGENTS)});
ALTER TABLE host ADD COLUMN fence_options jsonb NOT NULL DEFAULT '{{}}'::jsonb;
ALTER TABLE host ADD COLUMN storage_leases boolean NOT NULL DEFAULT false;
ALTER TABLE host ADD COLUMN unreachable_since timestamptz;
ALTER TABLE host ADD COLUMN fenced_at timestamptz;
-- domains the host runs that are no VM of the engine's (reported when they appear)
ALTER TABLE host ADD COLUMN unmanaged_domains jsonb NOT NULL DEFAULT '[]'::jsonb;
-- a fence agent's password or token: apart, so that no query of host rows ever carries it
CREATE TABLE host_fence_secret (
    host_id     uuid PRIMARY KEY REFERENCES host (id) ON DELETE CASCADE,
    secret      text NOT NULL CHECK (secret !~ '[[:cntrl:]]' AND length(secret) <= 1024)
);
ALTER TABLE cluster ADD COLUMN resilience_policy text NOT NULL DEFAULT 'migrate'
    CHECK (resilience_policy IN {_in(RESILIENCE_POLICIES)});
ALTER TABLE vm_runtime DROP CONSTRAINT vm_runtime_check;
ALTER TABLE vm_runtime ADD CONSTRAINT vm_runtime_check
    CHECK (status IN ('Down', 'Suspended', 'RestartingHA') OR run_host_id IS NOT NULL);
ALTER TABLE vm_runtime ADD COLUMN ha_attempts integer NOT NULL DEFAULT 0;
ALTER TABLE vm_runtime ADD COLUMN ha_next_at timestamptz;
ALTER TABLE vm_runtime ADD COLUMN ha_since timestamptz;
ALTER TABLE vm_runtime ADD COLUMN ha_from_host text;
CREATE INDEX vm_runtime_ha_idx ON vm_runtime (ha_next_at) WHERE status = 'RestartingHA';
CREATE TABLE monitor_lease (
    name        text PRIMARY KEY,
    holder      text,
    epoch       bigint NOT NULL DEFAULT 0,
    acquired_at timestamptz,
    renewed_at  timestamptz,
    expires_at  timestamptz
);
INSERT INTO monitor_lease (name) VALUES ('monitor');
"""

# Whoever changes a host's status (the monitor, a host check, an activation), its silence and its fence follow:
# a host that answers again is no longer fenced, and one that became silent is timed from then
_HOST_SILENCE = """
CREATE FUNCTION host_silence() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status NOT IN ('Connecting', 'NonResponsive') THEN
        NEW.unreachable_since := NULL;
    ELSIF NEW.unreachable_since IS NULL THEN
        NEW.unreachable_since := clock_timestamp();
    END IF;
    IF NEW.status <> 'NonResponsive' THEN
        NEW.fenced_at := NULL;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER host_silence BEFORE INSERT OR UPDATE OF status ON host FOR EACH ROW EXECUTE FUNCTION host_silence();
UPDATE host SET fenced_at = NULL WHERE status <> 'NonResponsive';
UPDATE host SET unreachable_since = NULL WHERE status NOT IN ('Connecting', 'NonResponsive');
"""

MIGRATIONS = (
    Migration(1, "data centers, clusters and hosts", _CORE),
    Migration(2, "storage, networks, templates, VMs, disks, snapshots and affinity", _RESOURCES),
    Migration(3, "audit events and jobs", _AUDIT),
    # the administrator's choice (auto/kvm/qemu) survives later refreshes of the host
    Migration(4, "host domain type setting", _HOST_DOMAIN_TYPE_SETTING),
    Migration(5, "storage domain attachments, host network NIC, iSCSI LUN disks", _ATTACHMENTS),
    Migration(6, "engine settings; no URI password or quoted file content kept", _SETTINGS),
    Migration(7, "reservations (job owner and heartbeat), VM runtime and statistics apart, host CPU features "
                 "and statistics, MAC pools", _ENGINE_CORE),
    Migration(8, "the configuration a running VM was started with", _VM_RUNTIME_CONFIG),
    Migration(9, "the order of a VM's NICs", _VM_NIC_ORDER),
    Migration(10, "template disks", _TEMPLATE_DISKS),
    Migration(11, "snapshots as taken: kind, the VM then, libvirt's description, job", _SNAPSHOTS),
    Migration(12, "host capacity: reserved memory and CPUs, schedulable caps", _HOST_CAPACITY),
    Migration(13, "placement changes, for snapshots read again only where they changed", _PLACEMENT_CHANGES),
    Migration(14, "placement changes carry what a VM's reservation adds to or takes from its host", _PLACEMENT_DELTAS),
    Migration(15, "the CPU models a host can give its guests", _HOST_CPU_MODELS),
    Migration(16, "host CPU counters and a day of host loads", _HOST_LOAD_HISTORY),
    Migration(17, "the VM runtime's placement log written in its trigger", _PLACEMENT_TRIGGER_INLINE),
    Migration(18, "live migrations, and the reservation of a migrating VM on the host it goes to", _MIGRATIONS),
    Migration(19, "high availability: host monitoring and fencing, HA restarts, resilience, the monitor's lease",
              _HIGH_AVAILABILITY),
    Migration(20, "a host's silence and fence end when it answers again", _HOST_SILENCE),
)

LATEST_VERSION = MIGRATIONS[-1].version

# Kept outside the migrations so that even version 0 (an empty database) has it.
BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migration (
    version     integer PRIMARY KEY,
    description text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""
