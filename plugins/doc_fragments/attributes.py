# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # a module that changes the engine (and the hosts)
    DOCUMENTATION = r"""
attributes:
  check_mode:
    support: full
    description:
      - Runs the same code as a real run, reads the engine and the hosts the same way, and skips only the
        calls that change something, so RV(actions) and the diff are those of the real run.
  diff_mode:
    support: full
    description: Shows the fields that change, never raw XML; per-host changes are in RV(actions).
  idempotent:
    support: full
    description: A second run with the same options changes nothing and reports C(changed=false).
"""

    # a module that only reads
    INFO = r"""
attributes:
  check_mode:
    support: full
    description: Reads only; runs the same in check mode.
  diff_mode:
    support: none
    description: Nothing to compare; the module reads only.
  idempotent:
    support: full
    description: Reads only.
"""
