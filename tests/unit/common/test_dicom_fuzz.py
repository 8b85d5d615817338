"""Property-based fuzzing of the DICOM reader behind every upload and C-STORE (issue 15).

Whatever the bytes, `parse_instance` (what the store path runs) and the JSON
renderers (`/tags`, `/header`) either answer or raise Orthanc's 400 *Bad file
format*: never another exception, which the gateway would turn into a 500 and
the C-STORE SCP into a processing failure. Profiles in tests/fuzzing.py.
"""

from __future__ import annotations

from dicomkeep.common.dicom import orthanc_json
from dicomkeep.common.dicom.instance import dicom_prefix, parse_instance
from dicomkeep.common.errors import ErrorCode, OrthancError
from fuzzing import dicom_inputs, fuzz_settings, generated_files, part10, valid_dataset
from hypothesis import example, given


def _read_everything(data: bytes) -> None:
    """Run what an upload and the later reads of it run; only a 400 may escape."""
    try:
        parsed = parse_instance(data)
    except OrthancError as error:
        assert error.code is ErrorCode.BAD_FILE_FORMAT, error
        return
    assert all(parsed.ids) and parsed.sop_uid
    for fmt in ("full", "short", "simplify"):
        orthanc_json.tags_json(data, fmt)  # type: ignore[arg-type]
    orthanc_json.tags_json(data, whole=True)
    orthanc_json.header_json(data)
    prefix = dicom_prefix(data, parsed)
    if prefix is not None:
        orthanc_json.tags_json(prefix, assume_pixel_data=True)


@fuzz_settings(quick_examples=300)
@given(dicom_inputs())
@example(b"")
@example(b"\0" * 132)
@example(part10(valid_dataset()))
def test_any_upload_parses_or_is_a_bad_file_format(data: bytes) -> None:
    _read_everything(data)


@fuzz_settings(quick_examples=200)
@given(generated_files())
def test_generated_files_parse_or_are_a_bad_file_format(data: bytes) -> None:
    _read_everything(data)


def test_a_valid_generated_file_is_accepted() -> None:
    """The strategies' baseline is a file the reader accepts (else fuzzing proves nothing)."""
    parsed = parse_instance(part10(valid_dataset()))
    assert (parsed.study_uid, parsed.series_uid, parsed.sop_uid) == ("1.2.3", "1.2.3.4", "1.2.3.4.5")
