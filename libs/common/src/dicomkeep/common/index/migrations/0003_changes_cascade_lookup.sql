-- Deleting a resource deletes the change rows naming it and its descendants
-- (Orthanc's Changes table cascades on delete): find them by public ID.
CREATE INDEX IF NOT EXISTS changes_public_id ON changes(public_id);
-- /tools/lookup compares identifiers case-insensitively, as Orthanc's normalized ones.
CREATE INDEX IF NOT EXISTS resources_uid_upper ON resources(UPPER(dicom_uid));
