# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one exception hierarchy of the collection.

module_utils raise these; a module turns one into a single failure message.  Every error
names the object it is about and the cause, so an operator reading an AWX job log knows
what to fix without reading a traceback.
"""

from __future__ import annotations


class VirtplaneError(Exception):
    """Root of every error the collection raises on purpose."""

    def __init__(self, message, **details):
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self):
        return self.message


class ValidationError(VirtplaneError):
    """Input that cannot be accepted; raised before anything changes."""

    def __init__(self, field, cause):
        super().__init__("Invalid value for '%s': %s" % (field, cause), field=field)
        self.field = field
        self.cause = cause


class NotFoundError(VirtplaneError):
    """A referenced object does not exist in the engine."""

    def __init__(self, kind, name, action=None):
        message = "%s '%s' does not exist" % (kind, name)
        message = "Cannot %s: %s" % (action, message) if action else message[0].upper() + message[1:]
        super().__init__(message, kind=kind, name=name)


class ConflictError(VirtplaneError):
    """The request contradicts the engine's state (duplicates, dependants, immutable fields)."""


class EngineConnectionError(VirtplaneError):
    """The engine database cannot be reached or refuses the credentials."""


class SchemaVersionError(VirtplaneError):
    """The engine database schema is not the one this collection expects."""


class HypervisorError(VirtplaneError):
    """A hypervisor host (libvirt) refused or failed a request."""


class FenceError(VirtplaneError):
    """A fence agent could not power a host off or say whether it is off; never carries a credential."""
