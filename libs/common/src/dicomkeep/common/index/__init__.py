"""The index: the DICOM hierarchy and everything kept beside it, over the `Database` port.

Mirrors Orthanc's ServerIndex and its database schema. `Index` is the one
domain object services use (`async with Index(db):`); the SQL for SQLite and
PostgreSQL lives in this package, the database adapters only run it.
See docs/architecture.md ("The index") for the modules and their order.
"""

from dicomkeep.common.index.core import Index
from dicomkeep.common.index.job_records import (
    JobAction,
    JobOutcome,
    JobRecord,
    JobState,
    JobUpdate,
    LeaseLost,
    QueryRecord,
)
from dicomkeep.common.index.jobs import JobStore
from dicomkeep.common.index.peers import PeerStore
from dicomkeep.common.index.records import (
    ChangesPage,
    DeleteOutcome,
    Expected,
    InstanceFile,
    MetadataValue,
    Resource,
    Statistics,
    UnstableResource,
)
from dicomkeep.common.index.recycling import StorageLimits

__all__ = [
    "ChangesPage",
    "DeleteOutcome",
    "Expected",
    "Index",
    "InstanceFile",
    "JobAction",
    "JobOutcome",
    "JobRecord",
    "JobState",
    "JobStore",
    "JobUpdate",
    "LeaseLost",
    "MetadataValue",
    "PeerStore",
    "QueryRecord",
    "Resource",
    "Statistics",
    "StorageLimits",
    "UnstableResource",
]
