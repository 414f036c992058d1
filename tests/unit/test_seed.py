"""NoCloud seeds: an ISO 9660 image labelled cidata whose files cloud-init reads by their real names."""

import io

import pycdlib
import pytest

from ansible_collections.virtplane.kvm.plugins.module_utils.virt._seed import nocloud_seed


def read_back(image):
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(image))
    try:
        names = [child.rock_ridge.name().decode() for child in iso.list_children(rr_path="/") if child.is_file()]
        files = {}
        for name in names:
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path="/" + name)
            files[name] = out.getvalue().decode()
        joliet = sorted(child.file_identifier().decode("utf-16-be") for child in iso.list_children(joliet_path="/")
                        if child.is_file())
        return files, joliet
    finally:
        iso.close()


def label(image):
    return image[16 * 2048 + 40:16 * 2048 + 72].decode("ascii").rstrip()  # primary volume descriptor


def test_the_documents_under_their_own_names_on_a_cidata_volume():
    documents = {"meta-data": "instance-id: iid-web01\nlocal-hostname: web01\n",
                 "user-data": "#cloud-config\npackages: [nginx]\n", "network-config": "version: 2\n"}
    image = nocloud_seed(documents)
    assert label(image) == "cidata"
    files, joliet = read_back(image)
    assert files == documents
    assert joliet == ["meta-data", "network-config", "user-data"]


def test_only_what_is_given():
    files, _joliet = read_back(nocloud_seed({"meta-data": "instance-id: a\n"}))
    assert files == {"meta-data": "instance-id: a\n"}


@pytest.mark.parametrize(("documents", "message"), [
    ({"user-data": "#cloud-config\n"}, "a NoCloud seed needs its meta-data"),
    ({"meta-data": "instance-id: a\n", "vendor-data": "x"}, "not vendor-data"),
])
def test_what_is_no_seed_is_refused(documents, message):
    with pytest.raises(ValueError, match=message):
        nocloud_seed(documents)
