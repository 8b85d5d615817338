"""Where `dicomkeep cluster start` puts the blobs, and what its members then open.

The end-to-end case (stop, start, every file read back, with authentication on)
is tests/integration/test_command_line.py; these check the choice for each configuration.
"""

from __future__ import annotations

from pathlib import Path

from dicomkeep.allinone.cluster import _blob_overrides
from dicomkeep.common.adapters.file_blobs import FileBlobStore
from dicomkeep.common.settings import Settings, load_settings
from dicomkeep.common.wiring import make_blobs


def settings_of(config: Path, text: str, environ: dict[str, str] | None = None) -> Settings:
    config.write_text(text)
    return load_settings(config, environ={"ORTHANC__DICOM_KEEP__MODE": "distributed",
                                          **(environ or {})})


def test_without_an_s3_endpoint_the_blobs_go_to_the_state_folder(tmp_path: Path) -> None:
    settings = settings_of(tmp_path / "c.json", "{}")
    overrides = _blob_overrides(settings, tmp_path / "state")
    assert overrides == {
        "ORTHANC__DICOM_KEEP__BLOB_STORE": "files",
        "ORTHANC__STORAGE_DIRECTORY": str((tmp_path / "state" / "storage").resolve()),
    }


def test_a_configured_storage_directory_is_kept(tmp_path: Path) -> None:
    settings = settings_of(tmp_path / "c.json", f'{{"StorageDirectory": "{tmp_path}/blobs"}}')
    overrides = _blob_overrides(settings, tmp_path / "state")
    assert overrides["ORTHANC__STORAGE_DIRECTORY"] == str(tmp_path / "blobs")


def test_an_s3_endpoint_or_blob_store_s3_keeps_s3(tmp_path: Path) -> None:
    endpoint = settings_of(tmp_path / "c.json",
                           '{"AwsS3Storage": {"Endpoint": "http://127.0.0.1:9"}}')
    assert _blob_overrides(endpoint, tmp_path) == {}
    aws = settings_of(tmp_path / "c.json", '{"DicomKeep": {"BlobStore": "s3"}}')
    assert _blob_overrides(aws, tmp_path) == {}


async def test_the_members_open_the_shared_folder(tmp_path: Path) -> None:
    settings = settings_of(tmp_path / "c.json", "{}")
    environ = _blob_overrides(settings, tmp_path / "state")
    member = settings_of(tmp_path / "c.json", "{}", environ)
    async with make_blobs(member) as store:
        assert isinstance(store, FileBlobStore)
        await store.put("abcd-1234", b"kept")
    assert (tmp_path / "state" / "storage" / "ab" / "cd" / "abcd-1234").read_bytes() == b"kept"
