-- Migration 6: case-insensitive exact matches on main tags (a PatientID in
-- /tools/find or C-FIND, where CaseSensitive is off by default) seek this index
-- instead of matching the tag of every resource of the level (index/find.py,
-- `key_test`). COLLATE "C": UPPER folds ASCII letters only, whatever the
-- database's locale, as the matching does for them.
CREATE INDEX IF NOT EXISTS main_tags_upper ON main_tags(tag_level, name, UPPER(value COLLATE "C"));
