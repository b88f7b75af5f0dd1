"""The auto-augment policy strings timm understands, checked before any data is touched.

timm's parsers fail late with a bare assert on an unknown section, and silently skip a section without a digit
or fall back to the default op set for an unknown `t<name>`; a typo would then train with another policy.
Kept free of heavy imports, since `AugmentConfig.validate` calls it.
"""

from __future__ import annotations

import re

from vitcompress.errors import VitCompressError

AUTO_AUGMENT_POLICIES = ("original", "originalr", "v0", "v0r", "3a")
RAND_TRANSFORM_SETS = ("weights", "3aw", "3a")
_INT, _FLOAT, _BOOL = r"\d+", r"\d+(\.\d*)?", r"[01]"
# The sections timm's parsers understand after the policy's first word; a value always starts with a digit,
# because timm splits each section at its first digit.
_SECTIONS = {
    "rand": {"m": _INT, "n": _INT, "p": _FLOAT, "mstd": _FLOAT, "mmax": _INT, "inc": _BOOL},
    "augmix": {"m": _INT, "w": _INT, "d": _INT, "a": _FLOAT, "b": _BOOL, "mstd": _FLOAT},
    "auto": {"mstd": _FLOAT},
}
POLICY_FORMS = (
    "rand-m<magnitude>[-n<ops>][-mstd<std>][-inc1] (RandAugment, e.g. rand-m9-mstd0.5-inc1), "
    "augmix-m<severity>[-w<width>][-d<depth>] (e.g. augmix-m5-w4-d2), "
    f"{', '.join(AUTO_AUGMENT_POLICIES)}[-mstd<std>] (AutoAugment), or null for none"
)


def _bad_section(kind: str, section: str) -> str | None:
    """Why `section` of a `kind` policy is malformed, or None when timm reads it as intended."""
    if kind == "rand" and section.startswith("t"):
        name = section[1:]
        return None if name in RAND_TRANSFORM_SETS else f"unknown transform set 't{name}'"
    match = re.fullmatch(r"([a-z]+)(\d.*)", section)
    if match is None:
        return f"section '{section}' is not <key><number>"
    key, value = match.groups()
    pattern = _SECTIONS[kind].get(key)
    if pattern is None:
        return f"unknown section '{key}'"
    if not re.fullmatch(pattern, value):
        return f"section '{section}' has a malformed value"
    return None


def check_aa_policy(policy: str | None) -> None:
    """Raise a one-line `VitCompressError` unless `policy` is None or a policy string timm parses as written.

    Raises:
        VitCompressError: an unknown policy name, an unknown or malformed section; the message lists the forms.
    """
    if policy is None:
        return
    words = policy.split("-") if isinstance(policy, str) else [""]
    first, sections = words[0], words[1:]
    kind = first if first in ("rand", "augmix") else "auto" if first in AUTO_AUGMENT_POLICIES else None
    reason = f"unknown policy '{first}'" if kind is None else None
    for section in sections if kind else ():
        reason = reason or _bad_section(kind, section)
    if reason:
        raise VitCompressError(f"aa={policy!r} is not a timm augmentation policy ({reason}); use {POLICY_FORMS}")
