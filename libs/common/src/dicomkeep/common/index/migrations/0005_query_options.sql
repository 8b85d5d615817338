-- Migration 5: the options of a REST query that its drill-downs inherit, as
-- Orthanc's QueryRetrieveHandler keeps them (`Normalize`, `Timeout`), as a JSON
-- object; queries kept before this migration had the defaults.

ALTER TABLE queries ADD COLUMN options TEXT NOT NULL DEFAULT '{}';
