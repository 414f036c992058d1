"""The execution environment: ansible-builder makes its build context from ee/ with the collection's tarball, and
the tarball carries the requirements that ansible-builder reads from an installed collection."""

import os
import shutil
import subprocess
import tarfile

import yaml

from tests.support.playbook import BIN, ROOT


def run(*argv, cwd):
    out = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_ansible_builder_makes_the_build_context_and_finds_the_collections_requirements(tmp_path):
    run(os.path.join(BIN, "ansible-galaxy"), "collection", "build", "--output-path", str(tmp_path / "dist"), ROOT,
        cwd=ROOT)
    [tarball] = os.listdir(tmp_path / "dist")
    with tarfile.open(tmp_path / "dist" / tarball) as archive:
        names = archive.getnames()
    assert {"meta/execution-environment.yml", "meta/ee-requirements.txt", "meta/ee-bindep.txt",
            "plugins/inventory/engine.py"} <= set(names)
    assert not [n for n in names if n.startswith(("ee/", "build/", ".venv/"))]

    # the build context, as `make ee` makes it
    shutil.copytree(os.path.join(ROOT, "ee"), tmp_path / "ee", ignore=shutil.ignore_patterns("*.tar.gz"))
    shutil.copy(tmp_path / "dist" / tarball, tmp_path / "ee" / "virtplane-kvm.tar.gz")
    run(os.path.join(BIN, "ansible-builder"), "create", "-f", str(tmp_path / "ee" / "execution-environment.yml"),
        "-c", str(tmp_path / "context"), "--output-filename", "Containerfile", cwd=str(tmp_path))
    context = tmp_path / "context"
    containerfile = (context / "Containerfile").read_text()
    assert "quay.io/centos/centos:stream9" in containerfile and "ansible-core==2.19.14" in containerfile
    assert "COPY _build/collections/ /tmp/virtplane/" in containerfile
    assert (context / "_build" / "collections" / "virtplane-kvm.tar.gz").read_bytes() == \
        (tmp_path / "dist" / tarball).read_bytes()
    requirements = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    assert requirements == {"collections": [{"name": "/tmp/virtplane/virtplane-kvm.tar.gz", "type": "file"}]}

    # what the image build asks of the installed collection (ansible-builder's introspection, run here)
    # --force: the collection is also found where the tests link it
    run(os.path.join(BIN, "ansible-galaxy"), "collection", "install", "--offline", "--force", "-p",
        str(tmp_path / "installed"), str(tmp_path / "dist" / tarball), cwd=str(tmp_path))
    found = yaml.safe_load(run(os.path.join(BIN, "ansible-builder"), "introspect", "--sanitize",
                               str(tmp_path / "installed"), cwd=str(tmp_path)))
    python = [line.split("#")[0].strip() for line in found["python"]]
    assert {"psycopg[binary]>=3.1", "libvirt-python>=9.0", "netaddr>=0.10", "jmespath>=1.0", "pycdlib>=1.12"} \
        <= set(python)
    system = [line.split("#")[0].strip() for line in found["system"]]
    assert "libvirt-devel [platform:rpm compile]" in system and "fence-agents-redfish [platform:rpm]" in system
