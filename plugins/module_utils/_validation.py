# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Input checks every layer shares: names, text, numbers, sizes, paths.

Each check matches a value whole (``fullmatch``: a pattern ending in ``$`` also matches before a
final newline) and refuses what the engine database would refuse, with one message that names
the field, before anything changes. Values are quoted through ``shown``, so a message stays one
line whatever was typed.
"""

from __future__ import annotations

import fractions
import ipaddress
import posixpath
import re

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import ValidationError

# Names users type in inventories: letters, digits, '.', '_' and '-', 64 characters at most (the
# database's object_name domain holds the same pattern).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

# Characters a terminal or a log viewer acts on: C0 and C1 controls, bidirectional overrides and
# isolates (text that reads otherwise than it is), line and paragraph separators.
_ACTIVE = "\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff"
_CONTROL = re.compile("[%s]" % _ACTIVE)
_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(match):
    char = match.group()
    return _ESCAPES.get(char) or ("\\x%02x" % ord(char) if ord(char) < 256 else "\\u%04x" % ord(char))


def shown(value, limit=80):
    """``value`` quoted for a one-line message: control characters escaped, long text cut."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    return "'%s'" % _CONTROL.sub(_escape, text)


_NAME = re.compile(NAME_PATTERN)
# What a text field may hold; newlines and tabs are fine in a description, NUL bytes never
# (PostgreSQL refuses them) and nothing else a terminal or a log would act on.
_TEXT_CONTROL = re.compile("[%s]" % _ACTIVE.replace("\x00-\x1f", "\x00-\x08\x0b-\x1f"))
DESCRIPTION_MAX = 4096


def validate_name(field, value):
    # fullmatch: a pattern ending in $ also matches before a final newline, which PostgreSQL refuses
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValidationError(field, "%s is not a valid name: use 1-64 letters, digits, '.', '_' or '-', "
                                     "starting with a letter or digit" % (shown(value),))
    return value


def validate_pattern(field, value, pattern, what):
    """``value`` matched whole by ``pattern`` (a compiled regex), else one message naming the field."""
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValidationError(field, "%s is not %s" % (shown(value), what))
    return value


def validate_description(field, value):
    """Free text (newlines allowed), but no NUL or other control characters, and a bounded length."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(field, "must be text")
    bad = sorted(set(_TEXT_CONTROL.findall(value)))
    if bad:
        raise ValidationError(field, "contains control characters (%s); only newlines and tabs are allowed in text"
                              % ", ".join(_CONTROL.sub(_escape, c) for c in bad))
    if len(value) > DESCRIPTION_MAX:
        raise ValidationError(field, "is %d characters long; at most %d are kept" % (len(value), DESCRIPTION_MAX))
    return value


def validate_range(field, value, low, high, unit=""):
    """An integer option within [low, high]; booleans and fractions are refused too."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, "%s is not a whole number" % shown(value))
    if not low <= value <= high:
        raise ValidationError(field, "%d is outside %d-%d%s" % (value, low, high, unit and " " + unit))
    return value


# Seconds an operation waits for a host: a negative or zero wait would give up before asking.
TIMEOUT_RANGE = (1, 3600)


def validate_timeout(field, value):
    return validate_range(field, value, TIMEOUT_RANGE[0], TIMEOUT_RANGE[1], "seconds")


_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?) *([A-Za-z]*)")
SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kib": 1024, "m": 1024 ** 2, "mib": 1024 ** 2, "g": 1024 ** 3,
              "gib": 1024 ** 3, "t": 1024 ** 4, "tib": 1024 ** 4, "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3,
              "tb": 1000 ** 4}
# qcow2 stops at 64 TiB by default and PostgreSQL's bigint at 8 EiB: 1 PiB is beyond any real disk
# and far inside what the engine can store.
SIZE_MAX = 1024 ** 5


SIZE_MIN = 1024 ** 2
SECTOR = 512


def parse_size(field, value):
    """Bytes from '10GiB', '512MiB', '1.5G' (binary), '20GB' (decimal) or a plain number of bytes.

    Exact arithmetic (a fraction, never a rounded decimal): a size is a whole number of 512-byte
    sectors from 1 MiB to 1 PiB, or it is refused.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValidationError(field, "%s is not a size" % shown(value))
    if isinstance(value, int):
        number, unit = fractions.Fraction(value), ""
    else:
        match = _SIZE.fullmatch(value)
        if not match:
            raise ValidationError(field, "%s is not a size: use a number with a unit such as 10GiB or 512MiB"
                                  % shown(value))
        number, unit = fractions.Fraction(match.group(1)), match.group(2)
        if unit.lower() not in SIZE_UNITS:
            raise ValidationError(field, "%s has an unknown unit %s (use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)"
                                  % (shown(value), shown(unit)))
    exact = number * SIZE_UNITS[unit.lower()]
    if exact.denominator != 1:
        raise ValidationError(field, "%s is not a whole number of bytes" % shown(value))
    size = int(exact)
    if size <= 0:
        raise ValidationError(field, "%s is not a usable size: it must be more than 0 bytes" % shown(value))
    if size > SIZE_MAX:
        raise ValidationError(field, "%s is more than the 1 PiB a disk can have" % shown(value))
    if size < SIZE_MIN or size % SECTOR:
        raise ValidationError(field, "%s is not a disk size: a disk is at least 1 MiB, in whole 512-byte sectors"
                              % shown(value))
    return size


def parse_mib(field, value, zero=False):
    """Whole MiB from a memory amount ('256MiB', '2GiB', '1.5G', bytes as a number), up to 1 PiB;
    ``zero``: 0 is taken too."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValidationError(field, "%s is not an amount of memory" % shown(value))
    match = None if isinstance(value, int) else _SIZE.fullmatch(value)
    if isinstance(value, str) and not match:
        raise ValidationError(field, "%s is not an amount of memory: use a number with a unit such as 256MiB or 2GiB"
                              % shown(value))
    number, unit = (fractions.Fraction(value), "") if isinstance(value, int) else \
        (fractions.Fraction(match.group(1)), match.group(2))
    if unit.lower() not in SIZE_UNITS:
        raise ValidationError(field, "%s has an unknown unit %s (use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)"
                              % (shown(value), shown(unit)))
    exact = number * SIZE_UNITS[unit.lower()]
    if exact < 0 or (exact == 0 and not zero):
        raise ValidationError(field, "%s is not a usable amount: it must be more than 0" % shown(value))
    if exact > SIZE_MAX:
        raise ValidationError(field, "%s is more than 1 PiB" % shown(value))
    if exact % (1024 ** 2):
        raise ValidationError(field, "%s is not a whole number of MiB" % shown(value))
    return int(exact) // 1024 ** 2


# whitespace, control characters and shell/XML metacharacters
_UNSAFE = re.compile(r"[\s\x00-\x1f\x7f\"'<>&`;|$\\*?(){}\[\]!#~]")


def validate_text(field, value, what="value"):
    """Paths, IQNs, addresses: refuse whitespace and shell/XML metacharacters outright."""
    if not isinstance(value, str) or not value:
        raise ValidationError(field, "a %s is required" % what)
    bad = sorted(set(_UNSAFE.findall(value)))
    if bad:
        raise ValidationError(field, "%s contains characters that are not allowed in a %s: %s"
                              % (shown(value), what, " ".join(shown(c) for c in bad)))
    if len(value) > 1024:
        raise ValidationError(field, "is %d characters long; a %s has at most 1024" % (len(value), what))
    return value


def validate_path(field, value):
    validate_text(field, value, "path")
    if not value.startswith("/") or posixpath.normpath(value) != value or value.startswith("//"):
        raise ValidationError(field, "%s must be an absolute, normalized path (no '..', '.', '//' or trailing '/')"
                              % shown(value))
    return value


# Words iproute2 reads as keywords where an interface name goes: no bridge or NIC may be called so.
IPROUTE_WORDS = ("all", "any", "default", "dev", "help", "lo", "none", "type")

# Where the system lives: never storage, an image, or a file a URI may name.
SYSTEM_TREES = ("/proc", "/sys", "/dev", "/run", "/boot", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib64")


def validate_data_path(field, value):
    """An absolute path for data (storage, images): not the root and nothing of the system's trees."""
    validate_path(field, value)
    tree = next((t for t in SYSTEM_TREES if value == t or value.startswith(t + "/")), "/" if value == "/" else None)
    if tree:
        raise ValidationError(field, "%s is in the system's own %s; give data a directory of its own"
                              % (shown(value), tree))
    return value


_HOST_NAME = re.compile(r"(?=.{1,253}\.?$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                        r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")


def validate_host_name(field, value, what="a host name or an IP address"):
    """A host name (RFC 1123, a final dot allowed) or a canonical IP address, matched whole.

    A name whose last label is all digits or hexadecimal (``127.1``, ``0x7f000001``, ``01.02.03.04``)
    is an address the resolver reads its own way: refused unless it is a canonical address.
    """
    if not isinstance(value, str):
        raise ValidationError(field, "%s is not %s" % (shown(value), what))
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    last = value.rstrip(".").rsplit(".", 1)[-1]
    if not _HOST_NAME.fullmatch(value) or last.isdigit() or last.lower().startswith("0x"):
        raise ValidationError(field, "%s is not %s" % (shown(value), what))
    return value
