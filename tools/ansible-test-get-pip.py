"""Stand-in for the pip bootstrap script that ansible-test downloads from a host it cannot reach here.

ansible-test runs it inside a fresh virtual environment with the pip install arguments it wants
(`pip==24.2` and options); ensurepip provides a pip, which then installs the requested one from
the package index configured on this machine.
"""

import ensurepip
import os
import subprocess
import sys

saved = os.environ.get("PIP_CONFIG_FILE")
ensurepip.bootstrap(upgrade=True)
# ensurepip points PIP_CONFIG_FILE at /dev/null; the real install must see the machine's pip
# configuration (index, certificates), as ansible-test's own pip runs do.
if saved is None:
    os.environ.pop("PIP_CONFIG_FILE", None)
else:
    os.environ["PIP_CONFIG_FILE"] = saved
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install"] + args))
