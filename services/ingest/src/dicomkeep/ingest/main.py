"""The ingest service's composition root: the DICOM SCP on DicomPort/DicomAet."""

from __future__ import annotations

import asyncio

from dicomkeep.common.index import Index
from dicomkeep.common.ports.blobs import BlobStore
from dicomkeep.common.ports.bus import Bus
from dicomkeep.common.receiving import Receiver, bus_submitter
from dicomkeep.common.settings import Settings
from dicomkeep.common.wiring import make_bus, make_index, open_blobs
from dicomkeep.ingest.find import FindScp
from dicomkeep.ingest.move import RetrieveScp, add_retrieve_contexts
from dicomkeep.ingest.scp import StoreScp
from pynetdicom import evt


class IngestService:
    """Receives instances over DICOM and hands them to the indexer over the bus."""

    def __init__(
        self,
        settings: Settings,
        blobs: BlobStore | None,
        bus: Bus,
        *,
        owns: tuple[bool, bool] = (False, False),
        host: str = "0.0.0.0",
        index: Index | None = None,
    ) -> None:
        self.settings = settings
        self.blobs = blobs
        self.bus = bus
        # C-FIND reads the index; opened (and owned) at start when not given.
        self.index = index
        self._owns_index = index is None
        self._owns_blobs, self._owns_bus = owns
        self.host = host
        self.scp: StoreScp | None = None

    async def start(self) -> None:
        """Open what it owns and start listening."""
        if self._owns_blobs or self.blobs is None:
            self.blobs = await open_blobs(self.settings)
        if self._owns_bus:
            await self.bus.start()
        settings = self.settings
        if self.index is None:
            self.index = make_index(settings)
            await self.index.open()
        loop = asyncio.get_running_loop()
        find_scp = FindScp(settings, self.index, self.blobs, loop)
        retrieve_scp = RetrieveScp(settings, self.index, self.blobs, self.bus, loop)
        receiver = Receiver(
            self.blobs,
            bus_submitter(self.bus, settings.dicomkeep.store_timeout),
            compression=settings.storage_compression,
            overwrite=settings.overwrite_instances,
        )
        self.scp = StoreScp(
            receiver,
            asyncio.get_running_loop(),
            ae_title=settings.dicom_aet,
            timeout=float(settings.dicom_scp_timeout),
            store_timeout=settings.dicomkeep.store_timeout + 5,
            require_called_aet=settings.dicom_check_called_aet,
            extra_handlers=[
                (evt.EVT_C_FIND, find_scp.handle_find),
                (evt.EVT_C_MOVE, retrieve_scp.handle_move),
                (evt.EVT_C_GET, retrieve_scp.handle_get),
            ],
        )
        add_retrieve_contexts(self.scp.ae)
        await asyncio.to_thread(self.scp.start, self.host, settings.dicom_port)

    async def stop(self) -> None:
        """Stop listening, close what it owns."""
        if self.scp is not None:
            await asyncio.to_thread(self.scp.stop)
        if self._owns_bus:
            await self.bus.close()
        if self._owns_blobs and self.blobs is not None:
            await self.blobs.close()
        if self._owns_index and self.index is not None:
            await self.index.close()
            self.index = None


def build(
    settings: Settings,
    *,
    blobs: BlobStore | None = None,
    bus: Bus | None = None,
    index: Index | None = None,
) -> IngestService:
    """Build the ingest service; adapters not given are chosen and owned."""
    return IngestService(
        settings, blobs, bus or make_bus(settings), owns=(blobs is None, bus is None),
        index=index,
    )
