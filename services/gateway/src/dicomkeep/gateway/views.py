"""The JSON of a resource, as `GET /{level}/{id}` answers it (ORTHANC_API.md §2.3)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any

from dicomkeep.common.errors import NoAnswer
from dicomkeep.common.ids import Level, resource_path
from dicomkeep.common.index import Index, Resource
from dicomkeep.common.orthanc import MetadataType
from dicomkeep.common.series_status import series_status
from dicomkeep.gateway.args import TagFormat
from pydicom.datadict import tag_for_keyword

#: The key listing the children of each level.
CHILDREN_KEY = {Level.PATIENT: "Studies", Level.STUDY: "Series", Level.SERIES: "Instances"}
_INTEGER = re.compile(r"\s*[+-]?[0-9]+\s*")


def format_tag(tag: int) -> str:
    """Return `gggg,eeee` in lowercase hex."""
    return f"{tag >> 16:04x},{tag & 0xFFFF:04x}"


def format_main_tags(tags: Mapping[str, str], fmt: TagFormat) -> dict[str, Any]:
    """Render main DICOM tags: keyword keys (`simplify`), `gggg,eeee` keys (`short`),
    or `gggg,eeee` -> {"Name", "Type": "String", "Value"} (`full`)."""
    if fmt == "simplify":
        return dict(tags)
    result: dict[str, Any] = {}
    for keyword, value in tags.items():
        tag = tag_for_keyword(keyword)
        key = format_tag(tag) if tag is not None else keyword
        result[key] = value if fmt == "short" else {"Name": keyword, "Type": "String", "Value": value}
    return result


def integer_or_none(text: str | None) -> int | None:
    """Parse a stored integer metadata value; None when absent or not an integer."""
    if text is None or not _INTEGER.fullmatch(text):
        return None
    return int(text)


def reference(level: Level, public_id: str) -> dict[str, str]:
    """Return `{"ID", "Path", "Type"}` (lookup answers, RemainingAncestor)."""
    return {"ID": public_id, "Path": resource_path(level, public_id), "Type": level.value}


async def require_resource(index: Index, level: Level, public_id: str) -> Resource:
    """Return the resource, or raise NoAnswer (Orthanc's empty 404)."""
    resource = await index.get_resource(level, public_id)
    if resource is None:
        raise NoAnswer()
    return resource


async def series_status_of(index: Index, resource: Resource) -> str:
    """Return the `Status` of a series from its children's IndexInSeries."""
    expected = resource.metadata.get(MetadataType.EXPECTED_NUMBER_OF_INSTANCES)
    if expected is None:
        return series_status(None, []).value
    children = await asyncio.gather(
        *(index.get_metadata(Level.INSTANCE, child) for child in resource.children)
    )
    indexes = [
        values[MetadataType.INDEX_IN_SERIES].value if values and MetadataType.INDEX_IN_SERIES in values else None
        for values in children
        if values is not None  # deleted meanwhile
    ]
    return series_status(expected, indexes).value


async def expand_resource(
    index: Index, resource: Resource, fmt: TagFormat = "simplify"
) -> dict[str, Any]:
    """Return the full JSON object of one resource (§2.3, exact key set per level).

    `IsStable` (from the index, so that every replica agrees right after a store) and `LastUpdate` (when set) for patients, studies and series;
    `ExpectedNumberOfInstances` and `Status` for series; `FileSize`, `FileUuid`
    and `IndexInSeries` for instances; `AnonymizedFrom`/`ModifiedFrom` only when
    that metadata exists.
    """
    level = resource.level
    metadata = resource.metadata
    result: dict[str, Any] = {
        "ID": resource.public_id,
        "Type": level.value,
        "MainDicomTags": format_main_tags(resource.main_tags, fmt),
        "Labels": list(resource.labels),
    }
    if level.parent is not None:
        result[f"Parent{level.parent.value}"] = resource.parent_id
    children_key = CHILDREN_KEY.get(level)
    if children_key is not None:
        result[children_key] = list(resource.children)
    if level is Level.STUDY:
        result["PatientMainDicomTags"] = format_main_tags(resource.patient_main_tags or {}, fmt)
    if level is not Level.INSTANCE:
        result["IsStable"] = resource.is_stable
        if MetadataType.LAST_UPDATE in metadata:
            result["LastUpdate"] = metadata[MetadataType.LAST_UPDATE]
    if level is Level.SERIES:
        result["ExpectedNumberOfInstances"] = integer_or_none(metadata.get(MetadataType.EXPECTED_NUMBER_OF_INSTANCES))
        result["Status"] = await series_status_of(index, resource)
    if level is Level.INSTANCE:
        if resource.dicom is not None:
            result["FileSize"] = resource.dicom.uncompressed_size
            result["FileUuid"] = resource.dicom.uuid
        result["IndexInSeries"] = integer_or_none(metadata.get(MetadataType.INDEX_IN_SERIES))
    if MetadataType.ANONYMIZED_FROM in metadata:
        result["AnonymizedFrom"] = metadata[MetadataType.ANONYMIZED_FROM]
    if MetadataType.MODIFIED_FROM in metadata:
        result["ModifiedFrom"] = metadata[MetadataType.MODIFIED_FROM]
    return result


async def expand_many(
    index: Index, level: Level, ids: list[str], fmt: TagFormat
) -> list[dict[str, Any]]:
    """Expand resources in order; those deleted meanwhile are left out."""

    async def one(public_id: str) -> dict[str, Any] | None:
        resource = await index.get_resource(level, public_id)
        if resource is None:
            return None
        return await expand_resource(index, resource, fmt)

    expanded = await asyncio.gather(*(one(public_id) for public_id in ids))
    return [item for item in expanded if item is not None]
