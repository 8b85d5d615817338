"""Hypothesis profiles and strategies for the bad-input suite (issue 15).

Two profiles, chosen with `DICOMKEEP_FUZZ` (default `quick`):

- `quick`: part of `make test`. Few examples per property, derandomized (the same
  inputs on every run, no example database), so a failure is reproducible and the
  whole suite stays within a couple of minutes on a loaded 2-core machine.
- `long`: `make test-fuzz`. Many more examples, random seeds (print_blob shows the
  seed of a failure), for hunting.

`DICOMKEEP_FUZZ_EXAMPLES=N` overrides the number of examples of either profile.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

PROFILE_VARIABLE = "DICOMKEEP_FUZZ"
EXAMPLES_VARIABLE = "DICOMKEEP_FUZZ_EXAMPLES"

_COMMON = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                              HealthCheck.data_too_large],
    "print_blob": True,
}
settings.register_profile("quick", max_examples=60, derandomize=True, database=None, **_COMMON)
settings.register_profile("long", max_examples=3000, **_COMMON)


def profile_name() -> str:
    """Return the profile in force: `quick` unless `DICOMKEEP_FUZZ=long`."""
    return os.environ.get(PROFILE_VARIABLE, "quick")


def fuzz_settings(quick_examples: int | None = None, scale: float = 1.0) -> settings:
    """Return the settings of a property: the profile in force, with its example count.

    `quick_examples` replaces the quick profile's count for an expensive property
    (each example a network round trip); `scale` shrinks the long profile's.
    """
    base = settings.get_profile(profile_name())
    examples = base.max_examples
    if profile_name() == "quick" and quick_examples is not None:
        examples = quick_examples
    elif profile_name() != "quick":
        examples = max(1, int(examples * scale))
    if os.environ.get(EXAMPLES_VARIABLE):
        examples = int(os.environ[EXAMPLES_VARIABLE])
    return settings(base, max_examples=examples)


# -- DICOM bytes ---------------------------------------------------------------------

VRS = (
    "AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM "
    "UC UI UL UN UR US UT UV"
).split()
_LONG = set("OB OD OF OL OV OW SQ UC UN UR UT SV UV".split())
#: Tags worth hitting: the UIDs the store needs, character set, pixel data, items.
INTERESTING_TAGS = [
    0x00020010, 0x00080005, 0x00080016, 0x00080018, 0x00100020, 0x0020000D,
    0x0020000E, 0x00200013, 0x00280103, 0x7FE00010, 0xFFFEE000, 0xFFFEE00D,
    0xFFFEE0DD, 0x00091010, 0x00090010, 0x00081140,
]
INTERESTING_LENGTHS = [0, 1, 2, 3, 4, 0xFFFF, 0xFFFFFFFF, 0x7FFFFFFF, 0xFFFFFFFE]


def explicit_element(tag: int, vr: str, value: bytes, length: int | None = None) -> bytes:
    """Encode one explicit VR little endian element; `length` may lie about the value."""
    size = len(value) if length is None else length
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode("ascii")
    if vr in _LONG:
        return head + b"\0\0" + struct.pack("<L", size & 0xFFFFFFFF) + value
    return head + struct.pack("<H", size & 0xFFFF) + value


def part10(dataset: bytes, syntax: bytes = b"1.2.840.10008.1.2.1\0") -> bytes:
    """Wrap dataset bytes in a preamble, `DICM` and a minimal file meta group."""
    meta = (
        explicit_element(0x00020001, "OB", b"\0\1")
        + explicit_element(0x00020002, "UI", b"1.2.840.10008.5.1.4.1.1.7\0")
        + explicit_element(0x00020003, "UI", b"1.2.3.4.5.6.7.8\0")
        + explicit_element(0x00020010, "UI", syntax)
    )
    group = explicit_element(0x00020000, "UL", struct.pack("<L", len(meta)))
    return b"\0" * 128 + b"DICM" + group + meta + dataset


def _padded(value: bytes) -> bytes:
    return value + b" " if len(value) % 2 else value


@st.composite
def elements(draw: st.DrawFn, depth: int = 0) -> bytes:
    """One explicit VR LE element: a real or random tag and VR, a value that may
    lie about its length, a nested sequence with (un)defined lengths."""
    tag = draw(st.sampled_from(INTERESTING_TAGS) | st.integers(0, 0xFFFFFFFF))
    vr = draw(st.sampled_from(VRS))
    if vr == "SQ" and depth < 3:
        items = draw(st.lists(st.lists(elements(depth + 1), max_size=3), max_size=3))
        body = b"".join(
            struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF) + b"".join(item)
            + struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
            for item in items
        )
        undefined = draw(st.booleans())
        if undefined:
            return explicit_element(tag, vr, body + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0),
                                    0xFFFFFFFF)
        return explicit_element(tag, vr, body)
    value = _padded(draw(st.binary(max_size=40) | st.text(max_size=20).map(str.encode)))
    lie = draw(st.none() | st.sampled_from(INTERESTING_LENGTHS) | st.integers(0, 200))
    return explicit_element(tag, vr, value, lie)


def valid_dataset(uids: tuple[str, str, str] = ("1.2.3", "1.2.3.4", "1.2.3.4.5")) -> bytes:
    """The three UIDs the store needs, in tag order, explicit VR LE."""
    study, series, sop = (_padded(u.encode()) for u in uids)
    return (
        explicit_element(0x00080016, "UI", _padded(b"1.2.840.10008.5.1.4.1.1.7"))
        + explicit_element(0x00080018, "UI", sop)
        + explicit_element(0x00100020, "LO", b"FUZZ")
        + explicit_element(0x0020000D, "UI", study)
        + explicit_element(0x0020000E, "UI", series)
    )


@st.composite
def generated_files(draw: st.DrawFn) -> bytes:
    """A Part-10 file of random elements, sometimes around the three UIDs."""
    random = b"".join(draw(st.lists(elements(), max_size=6)))
    if draw(st.booleans()):
        random = valid_dataset() + random
    syntax = draw(st.sampled_from([
        b"1.2.840.10008.1.2.1\0", b"1.2.840.10008.1.2\0", b"1.2.840.10008.1.2.2\0",
        b"1.2.840.10008.1.2.1.99", b"1.2.840.10008.1.2.4.50", b"x\0", b"",
    ]))
    return part10(random, syntax)


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    """`original` with a few byte-level mutations: flips, overwrites (lengths set to
    extreme values), insertions, deletions, a truncation."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        kind = draw(st.sampled_from(["flip", "length", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "length":
            size = draw(st.sampled_from(INTERESTING_LENGTHS))
            data[pos : pos + 4] = struct.pack("<L", size)
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        else:
            del data[pos:]
    return bytes(data)


def sample_bytes(name: str) -> bytes:
    """The bytes of one of pydicom's bundled test files."""
    from pydicom.data import get_testdata_file

    return Path(str(get_testdata_file(name))).read_bytes()


#: Small samples of several encodings (mutating a large file wastes examples on pixels).
SEED_FILES = ["CT_small.dcm", "rtplan.dcm", "image_dfl.dcm", "MR_small_bigendian.dcm",
              "SC_rgb_rle_2frame.dcm"]


def dicom_inputs() -> st.SearchStrategy[bytes]:
    """Anything an upload may carry: mutated real files, generated files, raw bytes."""
    seeds = [sample_bytes(name) for name in SEED_FILES]
    return st.one_of(
        st.sampled_from(seeds).flatmap(mutated),
        generated_files(),
        st.binary(max_size=300),
        st.binary(max_size=200).map(lambda tail: b"\0" * 128 + b"DICM" + tail),
    )
