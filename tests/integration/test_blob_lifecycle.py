"""Blobs that no row refers to are collected; referenced blobs never are.

A process that dies between writing a blob and the commit of its store leaves
an orphan blob: simulated here by writing one straight into the blob store
(the storage folder, or the S3 bucket in distributed mode).
"""

from __future__ import annotations

import uuid

from dicomfiles import sample_path
from minio import Minio
from servers import Server, blob_keys, wait_until

SERVER_CONFIG = {"DicomKeep": {"OrphanGracePeriod": 1}}


def put_stray_blob(server: Server) -> str:
    key = str(uuid.uuid4())
    if server.storage_dir is not None:
        folder = server.storage_dir / key[0:2] / key[2:4]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / key).write_bytes(b"left behind by a crash")
    else:
        from io import BytesIO
        from urllib.parse import urlsplit

        client = Minio(urlsplit(server.s3_endpoint).netloc, access_key="test",
                       secret_key="test", secure=False, region="us-east-1")
        bucket = server.config["AwsS3Storage"]["BucketName"]
        client.put_object(bucket, key, BytesIO(b"left behind by a crash"), 22)
    return key


def test_orphan_blob_is_collected_and_stored_ones_stay(clean: Server) -> None:
    with clean.client() as client:
        answer = client.post("/instances", content=sample_path("CT_small.dcm").read_bytes())
        assert answer.status_code == 200
        instance_id = answer.json()["ID"]
        kept = client.get(f"/instances/{instance_id}").json()["FileUuid"]
        stray = put_stray_blob(clean)
        assert stray in blob_keys(clean)
        wait_until(lambda: stray not in blob_keys(clean), timeout=30, what="orphan collection")
        # The stored instance's blob is older than the grace period too, and stays.
        assert kept in blob_keys(clean)
        assert client.get(f"/instances/{instance_id}/file").content == (
            sample_path("CT_small.dcm").read_bytes()
        )
