# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # the options of every module that talks to hypervisor hosts
    DOCUMENTATION = r"""
options:
  timeout:
    description:
      - Seconds to wait for each host's libvirt to answer, 1 to 3600. A host that does not answer costs
        this once, in parallel with the others.
    type: int
    default: 15
"""

    # the options of every module whose work reserves an object (a job with a heartbeat)
    WAIT = r"""
options:
  wait:
    description:
      - When another run holds the object (its job is still alive), wait for it to end and then look again,
        so that two runs racing for one object make one change. With V(false), fail at once, naming the
        job that holds it.
      - A hold left by a run that died (its heartbeat stopped for longer than the engine's lease) is never
        waited for; it is taken over at once and its work finished or rolled back, with an event.
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait for another run's hold with O(wait=true), 0 to 3600.
    type: int
    default: 60
"""
