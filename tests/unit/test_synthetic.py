"""The synthetic DICOM generator: valid Part-10 files, consistent hierarchy, determinism."""

from __future__ import annotations

import warnings
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread, dcmwrite
from pydicom.dataset import FileDataset
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    XRayAngiographicImageStorage,
)
from synthetic import (
    GeneratedInstance,
    generate_dataset,
    generate_study,
    iter_dataset,
    main,
    write_files,
)


def read(instance: GeneratedInstance) -> FileDataset:
    return dcmread(BytesIO(instance.data))


def test_study_files_parse_with_consistent_hierarchy() -> None:
    instances = generate_study(series=3, instances_per_series=4, seed=1)

    assert len(instances) == 12
    study_uids = {i.study_uid for i in instances}
    assert len(study_uids) == 1
    assert len({i.series_uid for i in instances}) == 3
    assert len({i.sop_uid for i in instances}) == 12
    for instance in instances:
        assert instance.data[128:132] == b"DICM"
        ds = read(instance)
        assert ds.PatientID == instance.patient_id
        assert ds.StudyInstanceUID == instance.study_uid
        assert ds.SeriesInstanceUID == instance.series_uid
        assert ds.SOPInstanceUID == instance.sop_uid == ds.file_meta.MediaStorageSOPInstanceUID
        assert ds.SOPClassUID == ds.file_meta.MediaStorageSOPClassUID == CTImageStorage
        assert ds.Modality == instance.modality == "CT"
        for uid in (
            ds.StudyInstanceUID,
            ds.SeriesInstanceUID,
            ds.SOPInstanceUID,
            ds.FrameOfReferenceUID,
            ds.file_meta.ImplementationClassUID,
        ):
            assert UID(uid).is_valid
    by_series: dict[str, list[int]] = {}
    for instance in instances:
        ds = read(instance)
        by_series.setdefault(instance.series_uid, []).append(ds.InstanceNumber)
        # Orthanc's ExpectedNumberOfInstances: ImagesInAcquisition x NumberOfTemporalPositions.
        assert ds.ImagesInAcquisition * ds.NumberOfTemporalPositions == 4
    assert all(numbers == [1, 2, 3, 4] for numbers in by_series.values())
    assert sorted({read(i).SeriesNumber for i in instances}) == [1, 2, 3]


def test_headers_are_realistic() -> None:
    instances = generate_study(series=1, instances_per_series=3, rows=32, columns=48, seed=2)
    first, _, last = (read(i) for i in instances)

    for keyword in (
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyDescription",
        "ReferringPhysicianName",
        "InstitutionName",
        "SeriesDescription",
        "BodyPartExamined",
        "SliceThickness",
        "PixelSpacing",
        "FrameOfReferenceUID",
    ):
        assert str(first[keyword].value), keyword
    assert first.PatientSex in ("F", "M")
    assert (first.Rows, first.Columns) == (32, 48)
    assert (first.BitsAllocated, first.BitsStored, first.HighBit) == (16, 12, 11)
    assert first.PixelRepresentation == 0
    assert first.PhotometricInterpretation == "MONOCHROME2"
    assert first.SamplesPerPixel == 1
    assert len(first.PixelData) == 32 * 48 * 2
    assert max(first.PixelData[1::2]) < 16  # 12 bits stored: the high nibble is clear
    assert [float(v) for v in first.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert float(last.ImagePositionPatient[2]) < float(first.ImagePositionPatient[2])
    assert first.PixelData != last.PixelData


@pytest.mark.parametrize(
    ("modality", "sop_class_uid"),
    [
        ("CT", CTImageStorage),
        ("MR", MRImageStorage),
        ("CR", ComputedRadiographyImageStorage),
        ("DX", DigitalXRayImageStorageForPresentation),
        ("MG", DigitalMammographyXRayImageStorageForPresentation),
        ("US", UltrasoundImageStorage),
        ("XA", XRayAngiographicImageStorage),
        ("OT", SecondaryCaptureImageStorage),
        ("SC", SecondaryCaptureImageStorage),
        ("PX", SecondaryCaptureImageStorage),
    ],
)
def test_sop_class_matches_modality(modality: str, sop_class_uid: str) -> None:
    ds = read(generate_study(modality=modality, series=1, instances_per_series=1, seed=3)[0])

    assert ds.Modality == modality
    assert ds.SOPClassUID == sop_class_uid
    assert ("ImagePositionPatient" in ds) is (modality in ("CT", "MR"))
    assert ("ImageOrientationPatient" in ds) is (modality in ("CT", "MR"))


def test_same_seed_gives_identical_bytes() -> None:
    first = generate_dataset(2, 2, series=2, instances_per_series=2, seed=42)
    again = generate_dataset(2, 2, series=2, instances_per_series=2, seed=42)
    other = generate_dataset(2, 2, series=2, instances_per_series=2, seed=43)

    assert [i.data for i in first] == [i.data for i in again]
    assert not {i.sop_uid for i in first} & {i.sop_uid for i in other}
    assert not {i.study_uid for i in first} & {i.study_uid for i in other}


def test_unseeded_calls_give_new_uids() -> None:
    first = generate_study(series=1, instances_per_series=2)
    second = generate_study(series=1, instances_per_series=2)

    assert first[0].patient_id != second[0].patient_id
    assert not {i.sop_uid for i in first} & {i.sop_uid for i in second}


def test_study_equals_first_study_of_dataset_with_same_seed() -> None:
    study = generate_study(series=2, instances_per_series=2, seed=7)
    dataset = generate_dataset(3, series=2, instances_per_series=2, seed=7)

    assert [i.data for i in study] == [i.data for i in dataset[:4]]


def test_same_patient_id_shares_study_uid_only_within_a_seed() -> None:
    a = generate_study(patient_id="P1", series=1, instances_per_series=1, seed=1)[0]
    b = generate_study(patient_id="P2", series=1, instances_per_series=1, seed=1)[0]

    assert a.patient_id == "P1"
    assert a.study_uid != b.study_uid


@pytest.mark.parametrize(("series", "instances"), [(1, 1), (2, 5), (4, 3)])
def test_dataset_counts(series: int, instances: int) -> None:
    generated = generate_dataset(3, 2, series=series, instances_per_series=instances, seed=5)

    assert len(generated) == 3 * 2 * series * instances
    assert len({i.patient_id for i in generated}) == 3
    assert len({i.study_uid for i in generated}) == 3 * 2
    assert len({i.series_uid for i in generated}) == 3 * 2 * series
    assert len({i.sop_uid for i in generated}) == len(generated)
    demographics: dict[str, set[tuple[str, str, str]]] = {}
    for instance in generated:
        ds = read(instance)
        key = (str(ds.PatientName), ds.PatientBirthDate, ds.PatientSex)
        demographics.setdefault(instance.patient_id, set()).add(key)
    assert all(len(found) == 1 for found in demographics.values())


def test_explicit_study_uid_is_used() -> None:
    generated = generate_study(study_uid="1.2.3.4", series=2, instances_per_series=2, seed=1)

    assert {i.study_uid for i in generated} == {"1.2.3.4"}
    assert {read(i).StudyInstanceUID for i in generated} == {"1.2.3.4"}


@pytest.mark.parametrize(
    ("charset", "name", "encoded"),
    [
        ("ISO_IR 100", "Müller^Jürgen", "Müller^Jürgen".encode("latin-1")),
        ("ISO_IR 192", "Müller^Jürgen", "Müller^Jürgen".encode()),
        ("ISO_IR 192", "Иванова^Ольга", "Иванова^Ольга".encode()),
        ("ISO_IR 144", "Иванова^Ольга", "Иванова^Ольга".encode("iso8859_5")),
        ("\\ISO 2022 IR 87", "Yamada^Tarou=山田^太郎=やまだ^たろう", b"Yamada^Tarou="),
    ],
)
def test_charset_round_trip(charset: str, name: str, encoded: bytes) -> None:
    instance = generate_study(
        patient_name=name, charset=charset, series=1, instances_per_series=1, seed=1
    )[0]
    ds = read(instance)

    assert encoded in instance.data
    assert ds.PatientName == name
    value = ds.SpecificCharacterSet
    assert (value if isinstance(value, str) else "\\".join(value)) == charset


def test_non_ascii_name_without_charset_selects_utf8() -> None:
    ds = read(generate_study(patient_name="Lefèvre^Hélène", series=1, instances_per_series=1)[0])

    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds.PatientName == "Lefèvre^Hélène"


def test_ascii_default_omits_charset() -> None:
    ds = read(generate_study(series=1, instances_per_series=1, seed=1)[0])

    assert "SpecificCharacterSet" not in ds
    assert str(ds.PatientName).isascii()


@pytest.mark.parametrize("charset", ["ISO_IR 100", "ISO_IR 101", "ISO_IR 126", "ISO_IR 192"])
def test_generated_names_exercise_the_charset(charset: str) -> None:
    names = {
        str(read(i).PatientName)
        for i in generate_dataset(6, series=1, instances_per_series=1, charset=charset, seed=9)
    }

    assert names and all(not name.isascii() for name in names)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"patient_name": "Иванова^Ольга", "charset": "ISO_IR 100"},
        {"charset": "ISO_IR 999"},
        {"charset": "ISO 2022 IR 87"},
        {"transfer_syntax": JPEGBaseline8Bit},
        {"series": 0},
        {"instances_per_series": 0},
        {"rows": 0},
        {"columns": 70000},
        {"modality": "ct"},
    ],
)
def test_invalid_arguments_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        generate_study(**kwargs)


def test_dataset_rejects_identifiers_that_would_collide() -> None:
    with pytest.raises(ValueError):
        generate_dataset(2, patient_id="P1")
    with pytest.raises(ValueError):
        generate_dataset(1, 2, study_uid="1.2.3")
    with pytest.raises(TypeError):
        generate_dataset(1, sries=2)
    two_studies = generate_dataset(1, 2, patient_id="P1", series=1, instances_per_series=1)
    assert {i.patient_id for i in two_studies} == {"P1"}


@pytest.mark.parametrize(
    ("transfer_syntax", "is_implicit_vr"),
    [
        (ExplicitVRLittleEndian, False),
        (ImplicitVRLittleEndian, True),
        (DeflatedExplicitVRLittleEndian, False),
    ],
)
def test_transfer_syntax_is_written_as_stated(transfer_syntax: str, is_implicit_vr: bool) -> None:
    instances = generate_study(
        transfer_syntax=transfer_syntax,
        charset="ISO_IR 100",
        series=1,
        instances_per_series=2,
        seed=4,
    )
    explicit = generate_study(charset="ISO_IR 100", series=1, instances_per_series=2, seed=4)

    for instance, reference in zip(instances, explicit, strict=True):
        ds = read(instance)
        assert ds.file_meta.TransferSyntaxUID == transfer_syntax
        assert ds.original_encoding == (is_implicit_vr, True)
        assert ds.PixelData == read(reference).PixelData
        assert ds.PatientName == read(reference).PatientName
        # Splicing pre-encoded elements yields exactly what pydicom's dcmwrite writes.
        rewritten = BytesIO()
        dcmwrite(rewritten, ds, enforce_file_format=True)
        assert rewritten.getvalue() == instance.data
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        assert len(instances[0].data) < len(explicit[0].data) / 2


def test_generation_emits_no_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for charset in (None, "ISO_IR 100", "ISO_IR 192"):
            for instance in generate_study(charset=charset, series=1, instances_per_series=2):
                read(instance)


def test_iter_dataset_validates_before_yielding() -> None:
    with pytest.raises(ValueError):
        iter_dataset(1, rows=-1)
    assert sum(1 for _ in iter_dataset(2, series=1, instances_per_series=3)) == 6


def test_write_files(tmp_path: Path) -> None:
    instances = generate_study(series=2, instances_per_series=2, seed=6)

    paths = write_files(instances, tmp_path / "out")

    assert len(paths) == 4
    for path, instance in zip(paths, instances, strict=True):
        assert path == tmp_path / "out" / instance.study_uid / instance.series_uid / (
            f"{instance.sop_uid}.dcm"
        )
        assert path.read_bytes() == instance.data
    assert write_files(instances, tmp_path / "out") == paths  # idempotent


def test_cli_writes_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "--patients",
        "2",
        "--studies",
        "2",
        "--series",
        "3",
        "--instances",
        "2",
        "--modality",
        "MR",
        "--rows",
        "16",
        "--columns",
        "24",
        "--seed",
        "11",
    ]

    assert main([str(tmp_path / "a"), *argv]) == 0
    summary = capsys.readouterr().out
    assert main([str(tmp_path / "b"), *argv, "--transfer-syntax", "implicit"]) == 0

    files = sorted((tmp_path / "a").rglob("*.dcm"))
    assert len(files) == 2 * 2 * 3 * 2
    assert summary.count("\n") == 1
    assert summary.startswith("wrote 24 instances (2 patients, 4 studies, 12 series, ")
    ds = dcmread(files[0])
    assert (ds.Modality, ds.Rows, ds.Columns) == ("MR", 16, 24)
    assert len({dcmread(f).PatientID for f in files}) == 2
    implicit = dcmread(tmp_path / "b" / files[0].relative_to(tmp_path / "a"))
    assert implicit.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert implicit.SOPInstanceUID == ds.SOPInstanceUID  # same seed, same UIDs


def test_cli_rejects_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path), "--patients", "0"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--transfer-syntax", "jpeg"])
    assert "unsupported transfer syntax" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
