"""Contract of `Index.labels`: the same cases on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from dicomkeep.common.errors import OrthancError
from dicomkeep.common.ids import Level
from dicomkeep.common.index import Index
from test_index_find import command


async def test_labels_add_remove_list_find_and_cascade(index: Index) -> None:
    first = command("P1", "A^B", "1.2.1", "1.2.1.1", "1.2.1.1.1")
    second = command("P2", "C^D", "1.2.2", "1.2.2.1", "1.2.2.1.1")
    await index.store_instance(first)
    await index.store_instance(second)
    await index.labels.add(Level.STUDY, first.study_id, "b")
    await index.labels.add(Level.STUDY, first.study_id, "a")
    await index.labels.add(Level.STUDY, first.study_id, "a")
    await index.labels.add(Level.SERIES, second.series_id, "c")
    assert await index.labels.of(Level.STUDY, first.study_id) == ["a", "b"]
    assert await index.labels.all() == ["a", "b", "c"]
    resource = await index.get_resource(Level.STUDY, first.study_id)
    assert resource is not None and resource.labels == ["a", "b"]
    assert await index.find(Level.STUDY, [], labels=["a"], labels_constraint="All") == [first.study_id]
    assert await index.find(Level.STUDY, [], labels=["a"], labels_constraint="None") == [second.study_id]
    await index.labels.remove(Level.STUDY, first.study_id, "b")
    await index.labels.remove(Level.STUDY, first.study_id, "b")
    assert await index.labels.of(Level.STUDY, first.study_id) == ["a"]
    await index.delete_resource(Level.PATIENT, first.patient_id)
    assert await index.labels.all() == ["c"]


async def test_labels_refuse_unknown_resources_and_bad_names(index: Index) -> None:
    with pytest.raises(OrthancError) as unknown:
        await index.labels.add(Level.STUDY, "nope", "a")
    assert unknown.value.http_status == 404
    with pytest.raises(OrthancError) as bad:
        await index.labels.add(Level.STUDY, "nope", "no spaces")
    assert bad.value.http_status == 400
