"""What the gateway's routes work with: the settings and one instance of each port."""

from __future__ import annotations

from dataclasses import dataclass, field

from dicomkeep.common.dicom.receiving import Receiver
from dicomkeep.common.index import Index
from dicomkeep.common.ports.blobs import BlobStore
from dicomkeep.common.ports.bus import Bus
from dicomkeep.common.settings import Settings
from dicomkeep.common.storage import StorageAccessor


@dataclass
class GatewayContext:
    """The adapters the REST API uses, already opened by the composition root.

    The app never opens or closes them: `main.GatewayService` (or a test) owns
    their life cycle.
    """

    settings: Settings
    index: Index
    blobs: BlobStore
    bus: Bus
    receiver: Receiver
    #: Every read and write of attachment bytes goes through it (built over `blobs`).
    storage: StorageAccessor = field(init=False)

    def __post_init__(self) -> None:
        self.storage = StorageAccessor(self.blobs)
