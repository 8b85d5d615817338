"""Orthanc's matching rules for C-FIND and `POST /tools/find` (ORTHANC_API.md §11.4, §13).

A query is a mapping {tag: pattern}; `build_constraints` turns it into typed
constraints with Orthanc's semantics (DatabaseLookup::AddDicomConstraintInternal):
1. VR DA/DT/TM with `-` -> a range (`A-B`, `A-`, `-B`; `-` alone constrains nothing);
2. ModalitiesInStudy, or a value with `\\` -> a list (ModalitiesInStudy becomes a list
   on the series' Modality);
3. a wildcard VR (AE CS LO LT PN SH ST UC UR UT) with `*` or `?` -> a wildcard;
4. else exact. `*`/`?` in an exact value or a range bound -> 400 *Parameter out of
   range* ("Wildcards are not allowed on tag ...").
Empty values are universal matching (no constraint). A constrained tag the resource
lacks never matches.

Case-insensitive means "equal after upper-casing each character". That one rule is
rendered three ways that agree by construction: a Python regular expression (for
tags read from files), a PostgreSQL regular expression and a SQLite GLOB pattern
(for the index): each cased character becomes a class of its case variants
(`[eEé]` stays `[eE]`, `é` becomes `[éÉ]`), because SQLite's lower() and LIKE fold
ASCII only and PostgreSQL's depend on the collation.

Each constraint knows the level whose main tags answer it at the query level
(`Constraint.level`), or None when the tag must be read from the stored file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from functools import cached_property

from dicomkeep.common.dicom.instance import MAIN_DICOM_TAGS
from dicomkeep.common.dicom.parsing import dictionary_vr
from dicomkeep.common.errors import ErrorCode, OrthancError
from dicomkeep.common.ids import Level
from pydicom.datadict import keyword_for_tag, tag_for_keyword

QUERY_RETRIEVE_LEVEL = 0x00080052
SPECIFIC_CHARACTER_SET = 0x00080005
TIMEZONE_OFFSET_FROM_UTC = 0x00080201
RETRIEVE_AE_TITLE = 0x00080054
MODALITY = 0x00080060
MODALITIES_IN_STUDY = 0x00080061
SOP_CLASSES_IN_STUDY = 0x00080062
INSTANCE_AVAILABILITY = 0x00080056

#: Tags that never constrain a query (ORTHANC_API.md §11.4).
IGNORED_TAGS = frozenset({QUERY_RETRIEVE_LEVEL, SPECIFIC_CHARACTER_SET, TIMEZONE_OFFSET_FROM_UTC})
WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
RANGE_VRS = frozenset({"DA", "DT", "TM"})

#: Tags computed from the index at one level (Orthanc's ComputeCounters), by keyword.
COMPUTED_TAGS: dict[Level, tuple[str, ...]] = {
    Level.PATIENT: (
        "NumberOfPatientRelatedStudies",
        "NumberOfPatientRelatedSeries",
        "NumberOfPatientRelatedInstances",
    ),
    Level.STUDY: (
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "ModalitiesInStudy",
        "SOPClassesInStudy",
    ),
    Level.SERIES: ("NumberOfSeriesRelatedInstances",),
    Level.INSTANCE: (),
}
#: Every computed keyword, with its tag.
COMPUTED_TAG_NUMBERS: dict[str, int] = {
    keyword: int(tag_for_keyword(keyword) or 0)
    for keywords in COMPUTED_TAGS.values()
    for keyword in keywords
}
#: Always "ONLINE": every stored instance is on line.
INSTANCE_AVAILABILITY_VALUE = "ONLINE"

#: keyword -> the levels where it is a main DICOM tag (ImageOrientationPatient has two).
MAIN_TAG_LEVELS: dict[str, tuple[Level, ...]] = {}
for _level, _tags in MAIN_DICOM_TAGS.items():
    for _keyword, _ in _tags:
        MAIN_TAG_LEVELS[_keyword] = (*MAIN_TAG_LEVELS.get(_keyword, ()), _level)

_HEX_TAG = re.compile(r"([0-9a-fA-F]{4}),([0-9a-fA-F]{4})")
#: Characters with a meaning in PostgreSQL's and Python's regular expressions.
_REGEX_SPECIALS = frozenset(".^$|?*+()[]{}\\")


class Kind(str, Enum):
    """The four kinds of Orthanc constraints."""

    EXACT = "exact"
    WILDCARD = "wildcard"
    LIST = "list"
    RANGE = "range"


def tag_of(name: str) -> int:
    """Parse a query key: a DICOM keyword or `gggg,eeee` (hex, any case).

    Raises OrthancError BAD_REQUEST for anything else (Orthanc: unknown DICOM tag).
    """
    match = _HEX_TAG.fullmatch(name.strip())
    if match:
        return int(match.group(1), 16) << 16 | int(match.group(2), 16)
    tag = tag_for_keyword(name.strip())
    if tag is None:
        raise OrthancError(ErrorCode.BAD_REQUEST, f"Unknown DICOM tag: {name}")
    return int(tag)


def format_tag(tag: int) -> str:
    """Return `gggg,eeee` in lowercase hex."""
    return f"{tag >> 16:04x},{tag & 0xFFFF:04x}"


def keyword_of(tag: int) -> str:
    """Return the DICOM keyword of a tag, or `gggg,eeee` for private and unknown tags."""
    return str(keyword_for_tag(tag) or format_tag(tag))


def vr_of(tag: int) -> str:
    """Return the dictionary VR of a tag ("UN" if unknown; first one of `US or SS`)."""
    return str(dictionary_vr(tag)).split(" ")[0]


def main_tag_level(keyword: str, level: Level) -> Level | None:
    """Return the level whose main tags answer `keyword` in a query at `level`.

    The queried level itself when the tag is one of its main tags, else the nearest
    ancestor level, else the nearest descendant level (a study query on Modality
    matches studies with at least one such series); None when the tag is no main tag.
    """
    levels = MAIN_TAG_LEVELS.get(keyword, ())
    if not levels:
        return None
    if level in levels:
        return level
    above = [lv for lv in levels if lv.depth < level.depth]
    if above:
        return max(above, key=lambda lv: lv.depth)
    return min(levels, key=lambda lv: lv.depth)


def fold_variants(char: str) -> str:
    """Return the characters equal to `char` after upper-casing (itself first).

    Only one-character case mappings count (`ß` upper-cases to `SS`: it stays alone).
    """
    variants = [char]
    for other in (char.upper(), char.lower()):
        if len(other) == 1 and other not in variants and other.upper() == char.upper():
            variants.append(other)
    return "".join(variants)


@dataclass(frozen=True)
class Token:
    """One element of a pattern: `*` (ANY), `?` (ONE) or a literal character."""

    char: str
    wildcard: bool = False


def tokens(value: str, *, wildcard: bool) -> list[Token]:
    """Split a pattern; `*` and `?` are wildcards only when `wildcard` is true."""
    return [Token(c, wildcard and c in "*?") for c in value]


def regex_pattern(value: str, *, wildcard: bool, case_sensitive: bool) -> str:
    """Render a pattern as an anchored regular expression valid in Python and PostgreSQL.

    `*` -> `.*`, `?` -> `.`; a cased character matched case-insensitively becomes the
    class of its variants; regex metacharacters are escaped with a backslash.
    """
    parts = ["^"]
    for token in tokens(value, wildcard=wildcard):
        if token.wildcard:
            parts.append(".*" if token.char == "*" else ".")
            continue
        variants = token.char if case_sensitive else fold_variants(token.char)
        if len(variants) > 1:
            parts.append(f"[{variants}]")
        elif token.char in _REGEX_SPECIALS:
            parts.append("\\" + token.char)
        else:
            parts.append(token.char)
    parts.append("$")
    return "".join(parts)


def glob_pattern(value: str, *, wildcard: bool, case_sensitive: bool) -> str:
    """Render a pattern for SQLite's GLOB (case-sensitive, `*`, `?`, `[...]`).

    Literal `*`, `?` and `[` become one-character classes; cased characters matched
    case-insensitively become the class of their variants.
    """
    parts = []
    for token in tokens(value, wildcard=wildcard):
        if token.wildcard:
            parts.append(token.char)
            continue
        variants = token.char if case_sensitive else fold_variants(token.char)
        if len(variants) > 1 or token.char in "*?[":
            parts.append(f"[{variants}]")
        else:
            parts.append(token.char)
    return "".join(parts)


@dataclass(frozen=True)
class Constraint:
    """One constraint on one tag, with Orthanc's semantics.

    `values`: EXACT and WILDCARD hold one pattern, LIST its items, RANGE the pair
    (lower, upper) where "" leaves that side open. `level`: the level whose main tags
    answer it in this query (`main_tag_level`), None to read the tag from the file.
    """

    tag: int
    keyword: str
    kind: Kind
    values: tuple[str, ...]
    case_sensitive: bool = True
    level: Level | None = None

    @property
    def uses_pattern(self) -> bool:
        """True when the index must match with a pattern (GLOB / regex) rather than `=`."""
        return self.kind is Kind.WILDCARD or (
            self.kind in (Kind.EXACT, Kind.LIST) and not self.case_sensitive
        )

    def patterns(self) -> list[tuple[str, bool]]:
        """Return (pattern, wildcard) for each value to match (EXACT, WILDCARD, LIST)."""
        return [(value, self.kind is Kind.WILDCARD) for value in self.values]

    @cached_property
    def _compiled(self) -> list[re.Pattern[str]]:
        return [
            re.compile(regex_pattern(v, wildcard=w, case_sensitive=self.case_sensitive), re.DOTALL)
            for v, w in self.patterns()
        ]

    def matches(self, value: str | None) -> bool:
        """Tell whether a resource's value matches; an absent value (None) never does."""
        if value is None:
            return False
        if self.kind is Kind.RANGE:
            lower, upper = self.values
            return (not lower or value >= lower) and (not upper or value <= upper)
        if not self.uses_pattern:
            return value in self.values
        return any(regex.fullmatch(value) for regex in self._compiled)


def _no_wildcards(tag: int, value: str) -> None:
    if "*" in value or "?" in value:
        raise OrthancError(
            ErrorCode.PARAMETER_OUT_OF_RANGE, f"Wildcards are not allowed on tag {format_tag(tag)}"
        )


def make_constraint(
    tag: int, value: str, level: Level, *, vr: str | None = None, case_sensitive: bool = True
) -> Constraint | None:
    """Build the constraint of one non-empty query value (None: it constrains nothing).

    Raises OrthancError PARAMETER_OUT_OF_RANGE for a sequence tag or a wildcard
    where none is allowed.
    """
    vr = vr or vr_of(tag)
    if vr == "SQ":
        raise OrthancError(
            ErrorCode.PARAMETER_OUT_OF_RANGE, f"Cannot match on sequence {format_tag(tag)}"
        )
    keyword = keyword_of(tag)
    values: tuple[str, ...]
    if vr in RANGE_VRS and "-" in value:
        lower, _, upper = value.partition("-")
        _no_wildcards(tag, lower)
        _no_wildcards(tag, upper)
        if not lower and not upper:
            return None
        kind, values = Kind.RANGE, (lower, upper)
    elif tag == MODALITIES_IN_STUDY or "\\" in value:
        if tag == MODALITIES_IN_STUDY:
            tag, keyword = MODALITY, "Modality"
        kind, values = Kind.LIST, tuple(dict.fromkeys(value.split("\\")))
    elif vr in WILDCARD_VRS and ("*" in value or "?" in value):
        kind, values = Kind.WILDCARD, (value,)
    else:
        _no_wildcards(tag, value)
        kind, values = Kind.EXACT, (value,)
    return Constraint(
        tag=tag,
        keyword=keyword,
        kind=kind,
        values=values,
        case_sensitive=case_sensitive,
        level=main_tag_level(keyword, level),
    )


def build_constraints(
    level: Level,
    items: Iterable[tuple[int, str]],
    *,
    case_sensitive: bool = True,
    case_sensitive_pn: bool | None = None,
    vrs: Mapping[int, str] | None = None,
) -> list[Constraint]:
    """Turn (tag, value) pairs into constraints for a query at `level`.

    Skips empty values (universal matching), QueryRetrieveLevel, SpecificCharacterSet,
    TimezoneOffsetFromUTC and group lengths (gggg,0000). PN tags use
    `case_sensitive_pn` when given (C-FIND's CaseSensitivePN), every other tag
    `case_sensitive` (`/tools/find` applies CaseSensitive to all tags). `vrs` overrides
    the dictionary VR of some tags (e.g. private tags of a C-FIND identifier).
    Raises OrthancError PARAMETER_OUT_OF_RANGE as `make_constraint`.
    """
    constraints: list[Constraint] = []
    for tag, value in items:
        if not value or tag in IGNORED_TAGS or tag & 0xFFFF == 0:
            continue
        vr = (vrs or {}).get(tag) or vr_of(tag)
        sensitive = case_sensitive
        if vr == "PN" and case_sensitive_pn is not None:
            sensitive = case_sensitive_pn
        constraint = make_constraint(tag, value, level, vr=vr, case_sensitive=sensitive)
        if constraint is not None:
            constraints.append(constraint)
    return constraints


def parse_rest_query(
    level: Level, query: Mapping[str, object], *, case_sensitive: bool
) -> list[Constraint]:
    """Parse the `Query` object of `POST /tools/find` into constraints.

    Keys are keywords or `gggg,eeee`; values must be strings ("" = no constraint).
    Raises OrthancError BAD_REQUEST for a non-string value or an unknown tag, and
    PARAMETER_OUT_OF_RANGE for a misplaced wildcard.
    """
    items: list[tuple[int, str]] = []
    for name, value in query.items():
        if not isinstance(value, str):
            raise OrthancError(
                ErrorCode.BAD_REQUEST, f'Tag "{name}" should be associated with a string'
            )
        items.append((tag_of(name), value))
    return build_constraints(level, items, case_sensitive=case_sensitive)


def index_constraints(constraints: Iterable[Constraint]) -> list[Constraint]:
    """Return the constraints the index answers (on main tags)."""
    return [c for c in constraints if c.level is not None]


def file_constraints(constraints: Iterable[Constraint]) -> list[Constraint]:
    """Return the constraints that need the stored file (non-main tags)."""
    return [c for c in constraints if c.level is None]


def computed_value_keywords(level: Level) -> frozenset[str]:
    """Return the computed tags (keywords) available at `level`, InstanceAvailability included."""
    return frozenset((*COMPUTED_TAGS[level], "InstanceAvailability"))
