"""Synthetic DICOM studies for tests and benchmarks: realistic headers, cheap pixels.

A developer tool, not part of the product (it is not installed by `make run`):
`.venv/bin/python tests/synthetic.py OUT_DIR [--patients N ...]` writes a data set;
the tests and `bench/` import it as `synthetic`.

Every instance is a complete DICOM Part-10 file (preamble, "DICM", file meta) whose
SOP class matches its modality, with the patient/study/series/instance attributes an
Orthanc user expects (names, dates, accession number, descriptions, geometry for CT and
MR, `ImagesInAcquisition` so that a series reaches the *Complete* status).

With a seed, everything (UIDs, names, dates, pixels) derives from the seed through
string-keyed hashes, so the same arguments give byte-identical files on any machine.
UIDs are `pydicom.uid.generate_uid(UID_PREFIX, entropy)` where the entropy chains
seed, patient ID, study UID and series UID: two patients never share a study UID.
Without a seed a random one is drawn, so every call yields new UIDs.
"""

from __future__ import annotations

import argparse
import random
import secrets
import sys
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, uuid5

from pydicom.charset import python_encoding
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.uid import (
    PYDICOM_ROOT_UID,
    UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    XRayAngiographicImageStorage,
    generate_uid,
)

#: Root of every generated UID: pydicom's, meant for software without its own root.
UID_PREFIX = PYDICOM_ROOT_UID
#: A name-based UUID (ISO/IEC 9834-8 "2.25." form): stable, and ours without a root.
IMPLEMENTATION_CLASS_UID = f"2.25.{uuid5(NAMESPACE_URL, 'urn:dicomkeep:synthetic').int}"
IMPLEMENTATION_VERSION_NAME = "DICOMKEEP_SYN_1"
#: The transfer syntaxes the generator writes, by their CLI names.
TRANSFER_SYNTAXES: dict[str, UID] = {
    "explicit": ExplicitVRLittleEndian,
    "implicit": ImplicitVRLittleEndian,
    "deflated": DeflatedExplicitVRLittleEndian,
}


@dataclass(frozen=True)
class GeneratedInstance:
    """One generated DICOM file and the identifiers it carries."""

    data: bytes
    patient_id: str
    study_uid: str
    series_uid: str
    sop_uid: str
    modality: str


@dataclass(frozen=True)
class _Profile:
    """What a modality's images look like; `slice_thickness` None = projection image."""

    sop_class_uid: str
    body_parts: tuple[str, ...]
    study_descriptions: tuple[str, ...]
    series_descriptions: tuple[str, ...]
    pixel_spacing: float = 0.2
    slice_thickness: float | None = None


_CT = _Profile(
    CTImageStorage,
    ("CHEST", "ABDOMEN", "HEAD"),
    ("CT CHEST W/O CONTRAST", "CT ABDOMEN PELVIS W CONTRAST", "CT HEAD W/O CONTRAST"),
    ("AXIAL 1.25MM", "AXIAL 5MM", "CORONAL MPR", "SAGITTAL MPR"),
    0.7,
    1.25,
)
_MR = _Profile(
    MRImageStorage,
    ("BRAIN", "KNEE", "LSPINE"),
    ("MR BRAIN W/O CONTRAST", "MR KNEE RIGHT", "MR LUMBAR SPINE"),
    ("T1 SE AXIAL", "T2 TSE AXIAL", "FLAIR AXIAL", "DWI B1000"),
    0.9,
    3.0,
)
_XR = ("CHEST", "HAND", "KNEE"), ("XR CHEST 2 VIEWS", "XR HAND LEFT", "XR KNEE RIGHT")
_SC = _Profile(
    SecondaryCaptureImageStorage, ("CHEST",), ("SECONDARY CAPTURE",), ("SCREENSHOT",), 1.0
)
# Unknown modalities are written as Secondary Capture, as a capture workstation would.
_PROFILES: dict[str, _Profile] = {
    "CT": _CT,
    "MR": _MR,
    "CR": _Profile(ComputedRadiographyImageStorage, *_XR, ("PA", "LATERAL")),
    "DX": _Profile(DigitalXRayImageStorageForPresentation, *_XR, ("PA", "LATERAL")),
    "MG": _Profile(
        DigitalMammographyXRayImageStorageForPresentation,
        ("BREAST",),
        ("MG SCREENING BILATERAL",),
        ("L CC", "R CC", "L MLO", "R MLO"),
        0.1,
    ),
    "US": _Profile(
        UltrasoundImageStorage,
        ("ABDOMEN", "THYROID"),
        ("US ABDOMEN", "US THYROID"),
        ("B-MODE",),
        0.3,
    ),
    "XA": _Profile(
        XRayAngiographicImageStorage, ("HEART",), ("CORONARY ANGIOGRAPHY",), ("LAO 30",), 0.3
    ),
    "OT": _SC,
    "SC": _SC,
}

_FAMILY_NAMES = "SMITH JOHNSON BROWN GARCIA MARTIN DUBOIS PETIT SCHMIDT WEBER ROSSI PEETERS".split()
_GIVEN_NAMES = {
    "F": "MARY ANNA SOPHIE JULIA LUCIE ELENA".split(),
    "M": "JOHN PETER HUGO MARC DAVID LEO".split(),
}
# Names outside ASCII, to exercise SpecificCharacterSet; each is used only where the
# requested character set can encode it.
_INTERNATIONAL_NAMES = (
    ("Müller^Jürgen", "M"),
    ("Gonçalves^José", "M"),
    ("Åström^Björn", "M"),
    ("Lefèvre^Hélène", "F"),
    ("Dvořák^Antonín", "M"),
    ("Nowak^Małgorzata", "F"),
    ("Παπαδοπούλου^Ελένη", "F"),
    ("Иванова^Ольга", "F"),
    ("Yamada^Tarou=山田^太郎=やまだ^たろう", "M"),
    ("Wang^XiaoDong=王^小东", "M"),
)
_REFERRING = ("HOUSE^GREGORY", "GREY^MEREDITH", "WATSON^JOHN", "QUINN^MICHAELA")
_INSTITUTIONS = ("GENERAL HOSPITAL", "UNIVERSITY CLINIC", "CITY IMAGING CENTER")


@dataclass(frozen=True)
class _Patient:
    patient_id: str
    name: str
    birth_date: str
    sex: str


@dataclass(frozen=True)
class _Shape:
    """The per-study parameters, validated once."""

    series: int
    instances: int
    modality: str
    rows: int
    columns: int
    transfer_syntax: UID
    charset: str | None


def generate_study(
    *,
    patient_id: str | None = None,
    patient_name: str | None = None,
    study_uid: str | None = None,
    series: int = 2,
    instances_per_series: int = 5,
    modality: str = "CT",
    rows: int = 64,
    columns: int = 64,
    transfer_syntax: str = ExplicitVRLittleEndian,
    seed: int | None = None,
    charset: str | None = None,
) -> list[GeneratedInstance]:
    """Generate one study of `series` x `instances_per_series` instances, in order.

    Missing identifiers are generated: `patient_id` is `DK<12 hex><0001>`, names come
    from a pool (non-ASCII ones when `charset` is given). `charset` is a
    SpecificCharacterSet value ("ISO_IR 100", "ISO_IR 192", backslash for several);
    when None the element is omitted, unless `patient_name` is not ASCII, which
    selects "ISO_IR 192". The same non-None `seed` and arguments give identical bytes,
    and `generate_study(seed=s)` equals `generate_dataset(1, seed=s)`.
    Raises ValueError for counts or sizes out of range, an unsupported transfer
    syntax, an unknown character set or a name it cannot encode.
    """
    return list(
        iter_dataset(
            1,
            1,
            patient_id=patient_id,
            patient_name=patient_name,
            study_uid=study_uid,
            seed=seed,
            charset=charset,
            series=series,
            instances_per_series=instances_per_series,
            modality=modality,
            rows=rows,
            columns=columns,
            transfer_syntax=transfer_syntax,
        )
    )


def iter_dataset(
    patients: int,
    studies_per_patient: int = 1,
    *,
    patient_id: str | None = None,
    patient_name: str | None = None,
    study_uid: str | None = None,
    seed: int | None = None,
    charset: str | None = None,
    **shape: Any,
) -> Iterator[GeneratedInstance]:
    """Yield `generate_dataset`'s instances lazily: one file in memory at a time.

    Arguments are validated before the first instance is yielded; `shape` takes
    `generate_study`'s series, instances_per_series, modality, rows, columns and
    transfer_syntax (TypeError for anything else).
    """
    if patients < 0 or studies_per_patient < 0:
        raise ValueError("patients and studies_per_patient must be >= 0")
    if patients > 1 and (patient_id is not None or patient_name is not None):
        raise ValueError("patient_id and patient_name need patients=1")
    if patients * studies_per_patient > 1 and study_uid is not None:
        raise ValueError("study_uid needs a single study")
    seed_text = _seed_text(seed)
    checked = _shape(charset=charset, patient_name=patient_name, **shape)
    return _iter_dataset(
        seed_text, patients, studies_per_patient, patient_id, patient_name, study_uid, checked
    )


def _iter_dataset(
    seed: str,
    patients: int,
    studies_per_patient: int,
    patient_id: str | None,
    patient_name: str | None,
    study_uid: str | None,
    shape: _Shape,
) -> Iterator[GeneratedInstance]:
    for p in range(1, patients + 1):
        patient = _make_patient(seed, p, patient_id, patient_name, shape.charset)
        for s in range(1, studies_per_patient + 1):
            yield from _iter_study(seed, patient, s, study_uid, shape)


def generate_dataset(
    patients: int, studies_per_patient: int = 1, **study_kwargs: Any
) -> list[GeneratedInstance]:
    """Generate `patients` x `studies_per_patient` studies with `generate_study`'s options.

    Patients get distinct IDs and UIDs; a patient keeps its name, birth date and sex in
    all its studies. `patient_id`/`patient_name` are accepted only with patients=1 and
    `study_uid` only for a single study (ValueError otherwise): they would collide.
    """
    return list(iter_dataset(patients, studies_per_patient, **study_kwargs))


def write_files(instances: Iterable[GeneratedInstance], folder: Path) -> list[Path]:
    """Write each instance to `folder/<StudyUID>/<SeriesUID>/<SOPUID>.dcm`; return the paths.

    Paths are returned in input order; folders are created; an existing file of the
    same SOP instance is overwritten (idempotent for identical instances).
    """
    paths = []
    for instance in instances:
        path = Path(folder) / instance.study_uid / instance.series_uid / f"{instance.sop_uid}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(instance.data)
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """Run `python tests/synthetic.py OUT_DIR ...`: write a data set and print a summary line.

    Returns 0. Bad arguments exit through argparse (SystemExit 2, usage on stderr).
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if min(args.patients, args.studies, args.series, args.instances) < 1:
        parser.error("--patients, --studies, --series and --instances must be >= 1")
    transfer_syntax = TRANSFER_SYNTAXES.get(args.transfer_syntax, args.transfer_syntax)
    try:
        instances = iter_dataset(
            args.patients,
            args.studies,
            series=args.series,
            instances_per_series=args.instances,
            modality=args.modality,
            rows=args.rows,
            columns=args.columns,
            transfer_syntax=transfer_syntax,
            seed=args.seed,
            charset=args.charset,
        )
        total = written = 0
        for instance in instances:
            write_files([instance], args.out_dir)
            total += 1
            written += len(instance.data)
    except ValueError as exc:
        parser.error(str(exc))
    sys.stdout.write(
        f"wrote {total} instances ({args.patients} patients, "
        f"{args.patients * args.studies} studies, "
        f"{args.patients * args.studies * args.series} series, {written} bytes) "
        f"to {args.out_dir}\n"
    )
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python tests/synthetic.py",
        description="Write a synthetic DICOM data set (patients x studies x series x instances).",
    )
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    parser.add_argument("--patients", type=int, default=1)
    parser.add_argument("--studies", type=int, default=1, help="studies per patient")
    parser.add_argument("--series", type=int, default=2, help="series per study")
    parser.add_argument("--instances", type=int, default=5, help="instances per series")
    parser.add_argument("--modality", default="CT")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--columns", type=int, default=64)
    parser.add_argument(
        "--seed", type=int, default=None, help="same seed and arguments = identical files"
    )
    parser.add_argument(
        "--transfer-syntax",
        default="explicit",
        help="explicit, implicit, deflated or a transfer syntax UID",
    )
    parser.add_argument("--charset", default=None, help='SpecificCharacterSet, e.g. "ISO_IR 192"')
    return parser


def _seed_text(seed: int | None) -> str:
    # An unseeded call draws 128 random bits, then follows the seeded path.
    return str(secrets.randbits(128) if seed is None else seed)


def _uid(*parts: object) -> str:
    # generate_uid joins its sources without a separator: add one against collisions.
    return str(generate_uid(UID_PREFIX, ["|".join(str(p) for p in parts)]))


def _shape(
    series: int = 2,
    instances_per_series: int = 5,
    modality: str = "CT",
    rows: int = 64,
    columns: int = 64,
    transfer_syntax: str = ExplicitVRLittleEndian,
    charset: str | None = None,
    patient_name: str | None = None,
) -> _Shape:
    if series < 1 or instances_per_series < 1:
        raise ValueError("series and instances_per_series must be >= 1")
    if not (0 < rows < 65536 and 0 < columns < 65536):
        raise ValueError("rows and columns must be in 1..65535")
    if not modality or len(modality) > 16 or not modality.isalnum() or not modality.isupper():
        raise ValueError(f"invalid modality {modality!r}")
    if transfer_syntax not in TRANSFER_SYNTAXES.values():
        raise ValueError(f"unsupported transfer syntax {transfer_syntax!r}")
    if charset is None and patient_name is not None and not patient_name.isascii():
        charset = "ISO_IR 192"
    if charset is not None:
        unknown = [t for t in charset.split("\\") if t not in python_encoding]
        if unknown:
            raise ValueError(f"unknown SpecificCharacterSet term(s) {unknown}")
        if charset.split("\\")[0] in _MULTI_BYTE_TERMS:
            # PS3.3 C.12.1.1.2: value 1 is a single-byte set, as in "\ISO 2022 IR 87".
            raise ValueError(f"{charset!r} must start with a single-byte character set")
    if patient_name is not None and not _is_encodable(patient_name, charset):
        raise ValueError(f"patient name cannot be encoded in {charset!r}")
    return _Shape(
        series, instances_per_series, modality, rows, columns, UID(transfer_syntax), charset
    )


_ASCII_TERMS = ("", "ISO_IR 6", "ISO 2022 IR 6")
_MULTI_BYTE_TERMS = ("ISO 2022 IR 87", "ISO 2022 IR 159", "ISO 2022 IR 149", "ISO 2022 IR 58")


def _is_encodable(text: str, charset: str | None) -> bool:
    if charset is None:
        return text.isascii()
    for term in charset.split("\\"):
        # pydicom maps the default repertoire to latin-1; DICOM means ASCII.
        codec = "ascii" if term in _ASCII_TERMS else python_encoding[term]
        try:
            text.encode(codec)
        except UnicodeError:
            continue
        return True
    return False


def _make_patient(
    seed: str, index: int, patient_id: str | None, name: str | None, charset: str | None
) -> _Patient:
    if patient_id is None:
        token = random.Random(f"{seed}|patient-token").getrandbits(48)
        patient_id = f"DK{token:012X}{index:04d}"
    # Keyed by the ID alone: a patient keeps its demographics across seeds and calls.
    rng = random.Random(f"patient|{patient_id}")
    pool = [n for n in _INTERNATIONAL_NAMES if charset and _is_encodable(n[0], charset)]
    if pool:
        generated, sex = rng.choice(pool)
    else:
        sex = rng.choice("FM")
        generated = f"{rng.choice(_FAMILY_NAMES)}^{rng.choice(_GIVEN_NAMES[sex])}"
    birth = date(1930, 1, 1) + timedelta(days=rng.randrange(75 * 365))
    return _Patient(patient_id, name or generated, birth.strftime("%Y%m%d"), sex)


def _iter_study(
    seed: str, patient: _Patient, index: int, study_uid: str | None, shape: _Shape
) -> Iterator[GeneratedInstance]:
    study_uid = study_uid or _uid(seed, patient.patient_id, "study", index)
    rng = random.Random(f"{seed}|study|{study_uid}")
    profile = _PROFILES.get(shape.modality, _SC)
    study = _study_dataset(rng, patient, index, study_uid, shape, profile)
    if profile.slice_thickness is not None:
        study.FrameOfReferenceUID = _uid(seed, study_uid, "frame-of-reference")
    encoder = _Encoder(shape.transfer_syntax, shape.charset, profile.sop_class_uid)
    study_parts = encoder.elements(study)
    for number in range(1, shape.series + 1):
        series_uid = _uid(seed, study_uid, "series", number)
        series = Dataset()
        series.SeriesTime = series.ContentTime = _add_minutes(study.StudyTime, 2 * number)
        series.SeriesDescription = profile.series_descriptions[
            (number - 1) % len(profile.series_descriptions)
        ]
        series.SeriesInstanceUID = series_uid
        series.SeriesNumber = number
        if shape.modality in ("CR", "DX", "MG"):
            series.ViewPosition = "PA" if number % 2 else "LL"
        series_parts = study_parts | encoder.elements(series)
        shift = rng.randrange(256)
        for instance_number in range(1, shape.instances + 1):
            sop_uid = _uid(seed, series_uid, instance_number)
            instance = _instance_dataset(sop_uid, instance_number, shift, shape, profile)
            data = encoder.file(series_parts | encoder.elements(instance), sop_uid)
            yield GeneratedInstance(
                data, patient.patient_id, study_uid, series_uid, sop_uid, shape.modality
            )


def _study_dataset(
    rng: random.Random,
    patient: _Patient,
    index: int,
    study_uid: str,
    shape: _Shape,
    profile: _Profile,
) -> Dataset:
    """The attributes shared by every instance of the study (series and images alike)."""
    ds = Dataset()
    if shape.charset is not None:
        ds.SpecificCharacterSet = shape.charset
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL" if profile.slice_thickness else "OTHER"]
    ds.SOPClassUID = profile.sop_class_uid
    study_date = (date(2020, 1, 1) + timedelta(days=rng.randrange(4 * 365))).strftime("%Y%m%d")
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date
    ds.StudyTime = f"{rng.randrange(7, 19):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}"
    ds.AccessionNumber = f"ACC{rng.randrange(10**9):09d}"
    ds.Modality = shape.modality
    ds.Manufacturer = "DICOMKEEP"
    ds.ManufacturerModelName = "SYNTHETIC"
    ds.InstitutionName = rng.choice(_INSTITUTIONS)
    ds.ReferringPhysicianName = rng.choice(_REFERRING)
    ds.StudyDescription = rng.choice(profile.study_descriptions)
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.BodyPartExamined = rng.choice(profile.body_parts)
    ds.StudyInstanceUID = study_uid
    ds.StudyID = str(index)
    ds.AcquisitionNumber = 1
    # Orthanc's ExpectedNumberOfInstances is ImagesInAcquisition x NumberOfTemporalPositions:
    # with both, the series status becomes Complete once every instance is stored.
    ds.ImagesInAcquisition = shape.instances
    ds.NumberOfTemporalPositions = 1
    spacing = [f"{profile.pixel_spacing:g}"] * 2
    if profile.slice_thickness is not None:
        ds.PatientPosition = "HFS"
        ds.SliceThickness = f"{profile.slice_thickness:g}"
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.PixelSpacing = spacing
    elif shape.modality in ("CR", "DX", "MG"):
        ds.ImagerPixelSpacing = spacing
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = shape.rows
    ds.Columns = shape.columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if shape.modality == "CT":
        ds.RescaleIntercept, ds.RescaleSlope = "-1024", "1"
        ds.WindowCenter, ds.WindowWidth = "40", "400"
    else:
        ds.WindowCenter, ds.WindowWidth = "2048", "4096"
    return ds


def _instance_dataset(
    sop_uid: str, number: int, shift: int, shape: _Shape, profile: _Profile
) -> Dataset:
    ds = Dataset()
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = number
    if profile.slice_thickness is not None:
        z = -(number - 1) * profile.slice_thickness
        x = -shape.columns * profile.pixel_spacing / 2
        y = -shape.rows * profile.pixel_spacing / 2
        ds.ImagePositionPatient = [f"{x:.2f}", f"{y:.2f}", f"{z:.2f}"]
        ds.SliceLocation = f"{z:.2f}"
    ds.PixelData = _pixels(shape.rows, shape.columns, shift + 4 * number)
    ds["PixelData"].VR = "OW"
    return ds


def _add_minutes(hhmmss: str, minutes: int) -> str:
    seconds = int(hhmmss[:2]) * 3600 + int(hhmmss[2:4]) * 60 + int(hhmmss[4:6]) + 60 * minutes
    seconds %= 24 * 3600
    return f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}"


@lru_cache(maxsize=16)
def _ramp(columns: int) -> bytes:
    # Little-endian 12-bit values ((i mod 256) * 16): one image row starts anywhere in
    # the first 256 values, so a row is a slice, not a loop over pixels.
    return b"".join(((i % 256) * 16).to_bytes(2, "little") for i in range(256 + columns))


def _pixels(rows: int, columns: int, shift: int) -> bytes:
    """Diagonal stripes, value ((x + y + shift) mod 256) * 16: cheap and deterministic."""
    ramp = _ramp(columns)
    row_bytes = 2 * columns
    starts = (2 * ((y + shift) % 256) for y in range(rows))
    return b"".join(ramp[start : start + row_bytes] for start in starts)


class _Encoder:
    """Part-10 files from elements that pydicom encodes once each, then spliced.

    `dcmwrite` costs about 3 ms per instance, mostly re-encoding the same study and
    series attributes; here each element is written once by pydicom's
    `write_data_element` and a file is the tag-ordered concatenation. The result is
    byte-identical to `dcmwrite(..., enforce_file_format=True)` (a unit test checks).
    """

    def __init__(self, transfer_syntax: UID, charset: str | None, sop_class_uid: str) -> None:
        self._is_deflated = transfer_syntax == DeflatedExplicitVRLittleEndian
        self._is_implicit_vr = transfer_syntax == ImplicitVRLittleEndian
        self._encodings = charset.split("\\") if charset else None
        meta = FileMetaDataset()
        meta.FileMetaInformationVersion = b"\0\1"
        meta.MediaStorageSOPClassUID = UID(sop_class_uid)
        meta.TransferSyntaxUID = transfer_syntax
        meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
        meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
        self._meta = _encode(meta, is_implicit_vr=False)

    def elements(self, ds: Dataset) -> dict[int, bytes]:
        """Encode each element of `ds` as the body's transfer syntax wants, by tag."""
        return _encode(ds, self._is_implicit_vr, self._encodings)

    def file(self, parts: dict[int, bytes], sop_uid: str) -> bytes:
        """Return preamble, "DICM", file meta and the body made of `parts` in tag order."""
        meta = self._meta | _encode(_one("MediaStorageSOPInstanceUID", sop_uid), False)
        meta_body = b"".join(meta[tag] for tag in sorted(meta))
        length = _one("FileMetaInformationGroupLength", len(meta_body))
        body = b"".join(parts[tag] for tag in sorted(parts))
        if self._is_deflated:
            # PS3.5 A.5: raw deflate of the encoded body, padded to even length, as
            # pydicom's dcmwrite does.
            compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
            body = compressor.compress(body) + compressor.flush()
            body += b"\0" * (len(body) % 2)
        group_length = _encode(length, is_implicit_vr=False)[0x00020000]
        return b"".join((b"\0" * 128, b"DICM", group_length, meta_body, body))


def _encode(
    ds: Dataset, is_implicit_vr: bool, encodings: list[str] | None = None
) -> dict[int, bytes]:
    """Encode each element of `ds` alone (little endian), by tag."""
    parts = {}
    for tag in ds.keys():
        fp = DicomBytesIO()
        fp.is_implicit_VR, fp.is_little_endian = is_implicit_vr, True
        write_data_element(fp, ds[tag], encodings)
        parts[int(tag)] = fp.getvalue()
    return parts


def _one(keyword: str, value: object) -> Dataset:
    ds = Dataset()
    setattr(ds, keyword, value)
    return ds


if __name__ == "__main__":
    raise SystemExit(main())
