"""The find use case behind C-FIND and `POST /tools/find`, over the Index and BlobStore.

Mirrors Orthanc's ServerContext::Apply: constraints on main DICOM tags are answered
by the index; the others are checked against the stored DICOM file of each
candidate (its first instance) when `StorageAccessOnFind` is `Always` (the
default); with `Answers` or `Never` such constraints see no value, so nothing
matches them. Answer values come from computed tags, then main tags (the resource's
and its ancestors', or its first instance's for lower levels), then, unless
`Never`, the file for non-main tags (ORTHANC_API.md §11.4, §13).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from dicomkeep.common.dicom.orthanc_json import tags_json
from dicomkeep.common.errors import OrthancError
from dicomkeep.common.find import (
    COMPUTED_TAG_NUMBERS,
    COMPUTED_TAGS,
    INSTANCE_AVAILABILITY_VALUE,
    Constraint,
    file_constraints,
    index_constraints,
    keyword_of,
    main_tag_level,
    tag_of,
)
from dicomkeep.common.ids import Level
from dicomkeep.common.index import Index
from dicomkeep.common.orthanc import FileContentType
from dicomkeep.common.ports.blobs import BlobStore
from dicomkeep.common.storage import StorageAccessor

log = logging.getLogger(__name__)

ALWAYS = "Always"
NEVER = "Never"


@dataclass(frozen=True)
class FindOutcome:
    """Matching IDs in index order; `complete` is False when `limit` cut the list."""

    ids: list[str]
    complete: bool


def effective_limit(level: Level, limit: int, limit_find_results: int, limit_find_instances: int) -> int:
    """Combine a request's limit with LimitFindResults/LimitFindInstances (0 = none)."""
    cap = limit_find_instances if level is Level.INSTANCE else limit_find_results
    values = [v for v in (limit, cap) if v > 0]
    return min(values) if values else 0


class FileReader:
    """The stored DICOM file of a resource's first instance, read once per resource.

    Prefers the "DICOM until pixel data" attachment when there is one. A resource
    without instance, attachment or blob (deleted meanwhile) has no file (None).
    """

    def __init__(self, index: Index, blobs: BlobStore) -> None:
        self.index = index
        self.storage = StorageAccessor(blobs)
        self._data: dict[tuple[Level, str], tuple[bytes, bool] | None] = {}
        self._strings: dict[tuple[Level, str], dict[int, str]] = {}

    async def data(self, level: Level, public_id: str) -> tuple[bytes, bool] | None:
        """Return (bytes, is_prefix) of the file, or None; is_prefix: stops before pixel data."""
        key = (level, public_id)
        if key not in self._data:
            self._data[key] = await self._read(level, public_id)
        return self._data[key]

    async def _read(self, level: Level, public_id: str) -> tuple[bytes, bool] | None:
        instances = await self.index.descendants(level, public_id, Level.INSTANCE)
        if not instances:
            return None
        attachments = await self.index.list_attachments(Level.INSTANCE, instances[0]) or []
        by_type = {a.content_type: a for a in attachments}
        info = by_type.get(FileContentType.DICOM_UNTIL_PIXEL_DATA)
        info = info or by_type.get(FileContentType.DICOM)
        if info is None:
            return None
        try:
            data = await self.storage.read(info)
        except KeyError:
            log.warning("find: blob of instance=%s is missing", instances[0])
            return None
        return data, info.content_type == FileContentType.DICOM_UNTIL_PIXEL_DATA

    async def strings(self, level: Level, public_id: str) -> dict[int, str]:
        """Return the top-level tags of the file with a string value (Orthanc's JSON
        summary: TooLong, binary and sequence values are left out), by tag number."""
        key = (level, public_id)
        if key in self._strings:
            return self._strings[key]
        found = await self.data(level, public_id)
        values: dict[int, str] = {}
        if found is not None:
            try:
                full = await asyncio.to_thread(tags_json, found[0], "full", assume_pixel_data=found[1])
            except OrthancError:
                log.warning("find: unreadable file for %s %s", level.value, public_id)
                full = {}
            for key_text, node in full.items():
                if node.get("Type") == "String":
                    values[tag_of(key_text)] = node["Value"]
        self._strings[key] = values
        return values


async def find_resources(
    index: Index,
    blobs: BlobStore,
    level: Level,
    constraints: Sequence[Constraint],
    *,
    since: int = 0,
    limit: int = 0,
    storage_access: str = ALWAYS,
    labels: Sequence[str] = (),
    labels_constraint: str = "All",
) -> FindOutcome:
    """Return the resources at `level` matching every constraint, in index order.

    Skips `since` matches and returns at most `limit` (0 = no limit); `complete`
    tells whether more matches were left out. Never raises for a resource deleted
    while the search runs (it simply does not match).
    """
    on_index, on_file = index_constraints(constraints), file_constraints(constraints)
    if not on_file:
        ids = await index.find(
            level, on_index, since=since, limit=limit + 1 if limit else None,
            labels=labels, labels_constraint=labels_constraint,
        )
        if limit and len(ids) > limit:
            return FindOutcome(ids[:limit], False)
        return FindOutcome(ids, True)
    candidates = await index.find(
        level, on_index, labels=labels, labels_constraint=labels_constraint
    )
    reader = FileReader(index, blobs)
    matched: list[str] = []
    skipped = 0
    for public_id in candidates:
        values = await reader.strings(level, public_id) if storage_access == ALWAYS else {}
        if not all(c.matches(values.get(c.tag)) for c in on_file):
            continue
        if skipped < since:
            skipped += 1
            continue
        if limit and len(matched) == limit:
            return FindOutcome(matched, False)
        matched.append(public_id)
    return FindOutcome(matched, True)


async def tag_values(
    index: Index,
    level: Level,
    public_ids: Sequence[str],
    tags: Sequence[int],
    *,
    reader: FileReader | None = None,
) -> dict[str, dict[int, str]]:
    """Return, per resource still known, the values found for `tags`.

    Sources, as Orthanc's C-FIND answers: computed tags of the level (counters,
    ModalitiesInStudy, SOPClassesInStudy, InstanceAvailability); main tags of the
    resource and its ancestors; main tags of a lower level from the resource's first
    instance (index only); other tags from the file through `reader` (None:
    StorageAccessOnFind `Never`). A main tag the resource lacks is not searched in
    the file. A tag found nowhere is absent from the resource's dictionary.
    """
    keywords = {tag: keyword_of(tag) for tag in tags}
    computed = [k for k in COMPUTED_TAGS[level] if k in keywords.values()]
    main = await index.find_tags(level, public_ids, computed)
    result: dict[str, dict[int, str]] = {}
    for public_id in public_ids:
        known = main.get(public_id)
        if known is None:
            continue
        values: dict[int, str] = {}
        below: list[int] = []
        on_file: list[int] = []
        for tag, keyword in keywords.items():
            home = main_tag_level(keyword, level)
            if keyword == "InstanceAvailability":
                values[tag] = INSTANCE_AVAILABILITY_VALUE
            elif keyword in known:
                values[tag] = known[keyword]
            elif home is not None and home.depth > level.depth:
                below.append(tag)
            elif home is None and keyword not in COMPUTED_TAG_NUMBERS:
                on_file.append(tag)
        if below:
            first = await _first_instance_tags(index, level, public_id)
            values.update({tag: first[keywords[tag]] for tag in below if keywords[tag] in first})
        if on_file and reader is not None:
            strings = await reader.strings(level, public_id)
            values.update({tag: strings[tag] for tag in on_file if tag in strings})
        result[public_id] = values
    return result


async def _first_instance_tags(index: Index, level: Level, public_id: str) -> dict[str, str]:
    """Main tags of a resource's first instance and its ancestors (Orthanc's
    GetAllMainDicomTags of the instance that represents the resource)."""
    instances = await index.descendants(level, public_id, Level.INSTANCE)
    if not instances:
        return {}
    return (await index.find_tags(Level.INSTANCE, instances[:1])).get(instances[0], {})
