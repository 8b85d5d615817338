-- Migration 1: the index schema of DicomKeep before schema versions existed.
-- Every statement is idempotent (IF NOT EXISTS, ON CONFLICT DO NOTHING), so that
-- applying it to a database created by that earlier DicomKeep adopts the database
-- as version 1 and changes nothing in it. Never edit: add a new migration.
-- Statements end with a semicolon at the end of a line.

CREATE TABLE IF NOT EXISTS resources (
    internal_id INTEGER PRIMARY KEY AUTOINCREMENT,
    level SMALLINT NOT NULL,
    public_id TEXT NOT NULL UNIQUE,
    parent_id BIGINT REFERENCES resources(internal_id) ON DELETE CASCADE,
    dicom_uid TEXT NOT NULL,
    is_protected SMALLINT NOT NULL DEFAULT 0,
    recycling_order BIGINT NOT NULL DEFAULT 0);

CREATE TABLE IF NOT EXISTS main_tags (
    internal_id BIGINT NOT NULL REFERENCES resources(internal_id) ON DELETE CASCADE,
    tag_level SMALLINT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (internal_id, tag_level, name));

CREATE TABLE IF NOT EXISTS metadata (
    internal_id BIGINT NOT NULL REFERENCES resources(internal_id) ON DELETE CASCADE,
    key INTEGER NOT NULL,
    value TEXT NOT NULL,
    revision INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (internal_id, key));

CREATE TABLE IF NOT EXISTS attachments (
    internal_id BIGINT NOT NULL REFERENCES resources(internal_id) ON DELETE CASCADE,
    content_type INTEGER NOT NULL,
    uuid TEXT NOT NULL,
    compressed_size BIGINT NOT NULL,
    uncompressed_size BIGINT NOT NULL,
    compression INTEGER NOT NULL,
    uncompressed_md5 TEXT NOT NULL,
    compressed_md5 TEXT NOT NULL,
    revision INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (internal_id, content_type));

CREATE INDEX IF NOT EXISTS attachments_uuid ON attachments(uuid);

CREATE TABLE IF NOT EXISTS labels (
    internal_id BIGINT NOT NULL REFERENCES resources(internal_id) ON DELETE CASCADE,
    label TEXT NOT NULL,
    PRIMARY KEY (internal_id, label));

CREATE TABLE IF NOT EXISTS changes (
    seq BIGINT PRIMARY KEY,
    change_type TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    public_id TEXT NOT NULL,
    path TEXT NOT NULL,
    date TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS outbox (
    seq BIGINT PRIMARY KEY,
    body TEXT NOT NULL,
    headers TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL);

INSERT INTO counters(name, value) VALUES ('seq', 0) ON CONFLICT (name) DO NOTHING;

INSERT INTO counters(name, value) VALUES ('recycling', 0) ON CONFLICT (name) DO NOTHING;

CREATE TABLE IF NOT EXISTS pending_blobs (
    uuid TEXT PRIMARY KEY,
    since TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS global_properties (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL);

CREATE INDEX IF NOT EXISTS resources_parent ON resources(parent_id);

CREATE INDEX IF NOT EXISTS resources_level ON resources(level, internal_id);

CREATE INDEX IF NOT EXISTS resources_uid ON resources(dicom_uid);

CREATE INDEX IF NOT EXISTS resources_recycling ON resources(level, is_protected, recycling_order);

CREATE INDEX IF NOT EXISTS main_tags_value ON main_tags(tag_level, name, value);

CREATE TABLE IF NOT EXISTS stability (
    internal_id BIGINT PRIMARY KEY REFERENCES resources(internal_id) ON DELETE CASCADE,
    level SMALLINT NOT NULL,
    public_id TEXT NOT NULL,
    touched_at DOUBLE PRECISION NOT NULL);

CREATE INDEX IF NOT EXISTS stability_due ON stability(touched_at);

CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    priority INTEGER NOT NULL,
    state TEXT NOT NULL,
    progress INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    last_update TEXT NOT NULL,
    completed TEXT,
    completed_at DOUBLE PRECISION,
    content TEXT NOT NULL,
    payload TEXT NOT NULL,
    output TEXT NOT NULL,
    error_code INTEGER NOT NULL DEFAULT 0,
    error_details TEXT NOT NULL DEFAULT '',
    worker TEXT,
    lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
    run_started DOUBLE PRECISION NOT NULL DEFAULT 0,
    runtime DOUBLE PRECISION NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    control TEXT);

CREATE INDEX IF NOT EXISTS jobs_queue ON jobs(state, priority, created_at);

CREATE TABLE IF NOT EXISTS modalities (
    name TEXT PRIMARY KEY,
    value TEXT);

CREATE TABLE IF NOT EXISTS queries (
    id TEXT PRIMARY KEY,
    created_at DOUBLE PRECISION NOT NULL,
    modality TEXT NOT NULL,
    level TEXT NOT NULL,
    query TEXT NOT NULL,
    answers TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS peers (
    name TEXT PRIMARY KEY,
    value TEXT);
