-- Migration 4: the exports log (`LogExportedResources`, `GET /exports`), as
-- Orthanc's ExportedResources table: one row per resource sent to a modality or
-- a peer, with the identifiers of the resource and its ancestors at that time.
-- No foreign key: the log outlives deleted resources, as Orthanc's does.

CREATE TABLE IF NOT EXISTS exports (
    seq BIGSERIAL PRIMARY KEY,
    resource_type TEXT NOT NULL,
    public_id TEXT NOT NULL,
    remote TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    sop_uid TEXT NOT NULL,
    date TEXT NOT NULL);
