"""The roles' bookkeeping modules on this machine: host_state refuses bad input in check mode as in a real run and
never records a host without systemd (this one); client_files keeps a host's files and given contents in a 0700
directory of the controller, in one task, and writes nothing in check mode."""

import os
import stat

import pytest

from tests.support.playbook import run_play

DIGEST = "0123456789abcdef" * 4


def host_state(**args):
    return [{"name": "state", "virtplane.kvm.host_state": dict({"path": "/nonexistent/state.json",
                                                                "digest": DIGEST}, **args)}]


@pytest.mark.parametrize("args, message", [
    ({"digest": "0123456789ABCDEF'; rm -rf /"}, "digest"),
    ({"digest": DIGEST + "\n"}, "digest"),
    ({"path": "state.json"}, "path 'state.json' must be an absolute path"),
    ({"path": "/var/lib/virtplane/\nstate.json"}, "must be an absolute path of a file"),
    ({"state": "record", "units": ["libvirtd.service; reboot"]}, "units: 'libvirtd.service; reboot' is not a systemd"),
    ({"state": "record", "packages": ["qemu\n"]}, "packages: 'qemu\\n' is not a package name"),
    ({"state": "record", "packages": ["-oAPT::x=1"]}, "is not a package name"),
    ({"state": "record", "files": ["etc/passwd"]}, "files: 'etc/passwd' must be an absolute path"),
    ({"max_age": -1}, "max_age -1 is out of range"),
    ({"max_age": 10 ** 12}, "max_age 1000000000000 is out of range"),
])
@pytest.mark.parametrize("check", [True, False])
def test_bad_input_is_refused_naming_the_field(args, message, check):
    run = run_play(host_state(**args), check=check)
    result = run["state"]
    assert result["failed"] and message in result["msg"], result
    assert not os.path.exists("/nonexistent")


@pytest.mark.skipif(os.path.isdir("/run/systemd/system"), reason="this machine runs systemd")
def test_a_host_without_systemd_never_holds_a_record(tmp_path):
    path = str(tmp_path / "role-state" / "x.json")
    run = run_play(host_state(path=path, state="record", files=[str(tmp_path)]) + host_state(path=path))
    assert run.rc == 0, run.output[-2000:]
    assert not os.path.exists(path)
    assert run["state"]["holds"] is False
    assert run["state"]["differences"] == ["systemd does not run this host: its daemons' state cannot be read"]


def read(path):
    with open(path) as handle:
        return handle.read()


def client_files(directory, **args):
    return [{"name": "files", "virtplane.kvm.client_files": dict({"dir": directory}, **args)}]


def test_client_files_are_kept_in_a_private_directory_and_only_rewritten_when_they_differ(tmp_path):
    source = tmp_path / "engine"
    source.mkdir()
    (source / "cacert.pem").write_text("CERTIFICATE\n")
    (source / "password").write_text("s3cret-password\n")
    directory = str(tmp_path / "client" / "lab")
    args = {"fetch": [{"src": str(source / "cacert.pem"), "name": "cacert.pem", "mode": "0644"},
                      {"src": str(source / "password"), "name": "password"}],
            "content": [{"name": "engine.virtplane.yml", "content": "plugin: virtplane.kvm.engine\n"}]}

    check = run_play(client_files(directory, **args), check=True)
    assert check["files"]["changed"] and not os.path.exists(directory)

    first = run_play(client_files(directory, **args))
    assert first["files"]["changed"], first.output[-2000:]
    assert "s3cret" not in first.output and "s3cret" not in str(first["files"])
    modes = {name: stat.S_IMODE(os.stat(os.path.join(directory, name)).st_mode)
             for name in ("cacert.pem", "password", "engine.virtplane.yml")}
    assert modes == {"cacert.pem": 0o644, "password": 0o600, "engine.virtplane.yml": 0o600}
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert read(os.path.join(directory, "password")) == "s3cret-password\n"

    again = run_play(client_files(directory, **args))
    assert not again["files"]["changed"], again["files"]

    # a mode widened and a password changed on the engine: both set right, and only they
    os.chmod(os.path.join(directory, "password"), 0o644)
    (source / "password").write_text("n3w-password\n")
    os.chmod(directory, 0o755)
    repaired = run_play(client_files(directory, **args))
    assert sorted(repaired["files"]["changed_files"]) == [directory, os.path.join(directory, "password")]
    assert stat.S_IMODE(os.stat(os.path.join(directory, "password")).st_mode) == 0o600
    assert read(os.path.join(directory, "password")) == "n3w-password\n"
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700


@pytest.mark.parametrize("args, message", [
    ({"content": [{"name": "../escape", "content": "x"}]}, "file names must be plain names"),
    ({"content": [{"name": "a", "content": "x"}, {"name": "a", "content": "y"}]}, "each once"),
    ({"fetch": [{"src": "etc/passwd", "name": "p"}]}, "src must be absolute paths"),
    ({"content": [{"name": "a", "content": "x", "mode": "u+rwx"}]}, "modes must be octal"),
    ({"dir": "relative/dir"}, "must be an absolute path on the controller"),
    ({"dir": "/tmp/a/../../etc"}, "must be an absolute path on the controller"),
])
@pytest.mark.parametrize("check", [True, False])
def test_client_files_refuse_names_and_paths_that_point_elsewhere(tmp_path, args, message, check):
    directory = str(tmp_path / "client")
    args = dict(args)
    run = run_play(client_files(args.pop("dir", directory), **args), check=check)
    assert run["files"]["failed"] and message in run["files"]["msg"], run["files"]
    assert not os.path.exists(directory)


def test_a_file_the_host_cannot_give_leaves_the_controller_as_it_was(tmp_path):
    directory = str(tmp_path / "client")
    run = run_play(client_files(directory, fetch=[{"src": str(tmp_path / "missing"), "name": "password"}],
                                content=[{"name": "engine.virtplane.yml", "content": "x\n"}]))
    assert run["files"]["failed"] and "cannot read" in run["files"]["msg"], run["files"]
    assert not os.path.exists(directory)
    check = run_play(client_files(directory, fetch=[{"src": str(tmp_path / "missing"), "name": "password"}]),
                     check=True)
    expected = [os.path.join(directory, "password"), directory]
    assert check["files"]["changed"] and check["files"]["changed_files"] == expected
