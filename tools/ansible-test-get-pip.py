"""Stand-in for the pip bootstrap script that ansible-test downloads from a host it cannot reach here.

ansible-test runs it inside a fresh virtual environment with the pip install arguments it wants
(`pip==24.2` and options); ensurepip provides a pip, which then installs the requested one from PyPI.
"""

import ensurepip
import subprocess
import sys

ensurepip.bootstrap(upgrade=True)
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install"] + args))
