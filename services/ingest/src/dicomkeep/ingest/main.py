"""The ingest service's composition root: the DICOM SCP on DicomPort/DicomAet."""

from __future__ import annotations

import asyncio
import logging

from dicomkeep.common.index import Index
from dicomkeep.common.ports.blobs import BlobStore
from dicomkeep.common.ports.bus import Bus
from dicomkeep.common.receiving import Receiver, bus_submitter
from dicomkeep.common.settings import Settings
from dicomkeep.common.wiring import make_bus, make_index, open_blobs
from dicomkeep.ingest.access import AccessControl
from dicomkeep.ingest.find import FindScp
from dicomkeep.ingest.move import RetrieveScp, add_retrieve_contexts
from dicomkeep.ingest.negotiation import Negotiation
from dicomkeep.ingest.scp import StoreScp
from dicomkeep.ingest.tls import server_context
from pynetdicom import evt

log = logging.getLogger(__name__)


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
        """Open what it owns and start listening (not with DicomServerEnabled false:
        then the adapters are still opened, so that readiness checks hold)."""
        if self._owns_blobs or self.blobs is None:
            self.blobs = await open_blobs(self.settings)
        if self._owns_bus:
            await self.bus.start()
        settings = self.settings
        if self.index is None:
            self.index = make_index(settings)
            await self.index.open()
        if not settings.dicom_server_enabled:
            log.info("DICOM server disabled (DicomServerEnabled false): not listening")
            return
        loop = asyncio.get_running_loop()
        access = AccessControl(settings, self.index, loop)
        find_scp = FindScp(settings, self.index, self.blobs, loop, access=access)
        retrieve_scp = RetrieveScp(settings, self.index, self.blobs, self.bus, loop, access=access)
        receiver = Receiver(
            self.blobs,
            bus_submitter(self.bus, settings.dicomkeep.store_timeout),
            compression=settings.storage_compression,
            overwrite=settings.overwrite_instances,
        )
        negotiation = Negotiation(settings, access, loop, [])
        self.scp = StoreScp(
            receiver,
            loop,
            ae_title=settings.dicom_aet,
            timeout=float(settings.dicom_scp_timeout),
            store_timeout=settings.dicomkeep.store_timeout + 5,
            access=access,
            threads=settings.dicom_threads_count,
            ssl_context=server_context(settings),
            extra_handlers=[
                (evt.EVT_REQUESTED, negotiation.handle_requested),
                (evt.EVT_C_FIND, find_scp.handle_find),
                (evt.EVT_C_MOVE, retrieve_scp.handle_move),
                (evt.EVT_C_GET, retrieve_scp.handle_get),
            ],
        )
        add_retrieve_contexts(self.scp.ae)
        negotiation.supported = list(self.scp.ae.supported_contexts)
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
