"""The ingest service's composition root: the DICOM SCP on DicomPort/DicomAet."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

from dicomkeep.common.index import Index
from dicomkeep.common.ports.blobs import BlobStore
from dicomkeep.common.ports.bus import Bus
from dicomkeep.common.receiving import Receiver, bus_submitter
from dicomkeep.common.settings import Settings
from dicomkeep.common.wiring import Adapters, open_adapters
from dicomkeep.ingest.find import FindScp
from dicomkeep.ingest.move import RetrieveScp, add_retrieve_contexts
from dicomkeep.ingest.scp import StoreScp
from pynetdicom import evt


class IngestService:
    """Receives instances over DICOM and hands them to the indexer over the bus."""

    #: The adapters it works with (opened at start unless given; checked by /readyz).
    NEEDS = ("index", "blobs", "bus")

    def __init__(
        self,
        settings: Settings,
        given: Adapters | None = None,
        *,
        host: str = "0.0.0.0",
    ) -> None:
        """Adapters not `given` are opened at `start` and closed at `stop`."""
        self.settings = settings
        self.adapters = given or Adapters()
        self.host = host
        self.scp: StoreScp | None = None
        self._stack = AsyncExitStack()

    @property
    def index(self) -> Index:
        assert self.adapters.index is not None, "IngestService is not started"
        return self.adapters.index

    @property
    def blobs(self) -> BlobStore:
        assert self.adapters.blobs is not None, "IngestService is not started"
        return self.adapters.blobs

    @property
    def bus(self) -> Bus:
        assert self.adapters.bus is not None, "IngestService is not started"
        return self.adapters.bus

    async def start(self) -> None:
        """Open what was not given and start listening (C-FIND reads the index)."""
        async with AsyncExitStack() as stack:
            self.adapters = await open_adapters(
                stack, self.settings, self.adapters, needs=self.NEEDS
            )
            scp = self._make_scp(asyncio.get_running_loop())
            await asyncio.to_thread(scp.start, self.host, self.settings.dicom_port)
            self.scp = scp
            stack.push_async_callback(asyncio.to_thread, scp.stop)
            self._stack = stack.pop_all()

    async def stop(self) -> None:
        """Stop listening, close what `start` opened."""
        await self._stack.aclose()

    def _make_scp(self, loop: asyncio.AbstractEventLoop) -> StoreScp:
        settings = self.settings
        find_scp = FindScp(settings, self.index, self.blobs, loop)
        retrieve_scp = RetrieveScp(settings, self.index, self.blobs, self.bus, loop)
        receiver = Receiver(
            self.blobs,
            bus_submitter(self.bus, settings.dicomkeep.store_timeout),
            compression=settings.storage_compression,
            overwrite=settings.overwrite_instances,
        )
        scp = StoreScp(
            receiver,
            loop,
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
        add_retrieve_contexts(scp.ae)
        return scp


def build(
    settings: Settings,
    *,
    blobs: BlobStore | None = None,
    bus: Bus | None = None,
    index: Index | None = None,
) -> IngestService:
    """Build the ingest service; adapters not given are chosen from the settings at start."""
    return IngestService(settings, Adapters(index=index, blobs=blobs, bus=bus))
