-- Migration 2: the storage service reads the blobs to delete oldest first
-- (`SELECT uuid FROM pending_blobs ORDER BY since LIMIT n`); index that order
-- so a large backlog is not sorted on every pass.

CREATE INDEX IF NOT EXISTS pending_blobs_since ON pending_blobs(since);
