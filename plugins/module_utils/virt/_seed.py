# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""NoCloud seeds: the ISO 9660 image, labelled ``cidata``, that cloud-init reads its documents from.

Built in memory with pycdlib (pure Python: no genisoimage or xorriso on any machine), so the engine can
write it on a host through libvirt as any other volume.
"""

from __future__ import annotations

import io
import traceback

try:
    import pycdlib
except ImportError:
    pycdlib = None
    PYCDLIB_IMPORT_ERROR = traceback.format_exc()
else:
    PYCDLIB_IMPORT_ERROR = None

# cloud-init's NoCloud data source finds its seed by this volume label
LABEL = "cidata"
# the documents of a seed, in the order they are written, and their ISO 9660 level 1 names (8.3,
# upper case); Rock Ridge and Joliet carry the real names that the guest reads
DOCUMENTS = (("meta-data", "/METADATA.;1"), ("user-data", "/USERDATA.;1"), ("network-config", "/NETWORKC.;1"))


def nocloud_seed(documents):
    """The bytes of a NoCloud seed ISO holding ``documents`` ({name: text}); ``meta-data`` is required."""
    if pycdlib is None:
        raise RuntimeError("the Python library pycdlib is needed to build a NoCloud seed")
    names = [name for name, _iso_path in DOCUMENTS]
    unknown = sorted(set(documents) - set(names))
    if unknown:
        raise ValueError("a NoCloud seed holds %s, not %s" % (", ".join(names), ", ".join(unknown)))
    if documents.get("meta-data") is None:
        raise ValueError("a NoCloud seed needs its meta-data")
    iso = pycdlib.PyCdlib()
    iso.new(joliet=3, rock_ridge="1.09", vol_ident=LABEL)
    for name, iso_path in DOCUMENTS:
        text = documents.get(name)
        if text is None:
            continue
        data = text.encode("utf-8")
        iso.add_fp(io.BytesIO(data), len(data), iso_path, rr_name=name, joliet_path="/" + name)
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()
