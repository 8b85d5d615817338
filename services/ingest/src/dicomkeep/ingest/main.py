"""The ingest service's composition root: the DICOM SCP on DicomPort/DicomAet."""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack

from dicomkeep.common.dicom.receiving import Receiver, bus_submitter
from dicomkeep.common.index import Index
from dicomkeep.common.ports.blobs import BlobStore
from dicomkeep.common.ports.bus import Bus
from dicomkeep.common.settings import Settings
from dicomkeep.common.wiring import Adapters, open_adapters
from dicomkeep.ingest.access import AccessControl
from dicomkeep.ingest.find import FindScp
from dicomkeep.ingest.move import RetrieveScp, add_retrieve_contexts, route_move_destinations
from dicomkeep.ingest.negotiation import Negotiation
from dicomkeep.ingest.scp import StoreScp
from dicomkeep.ingest.tls import server_context
from pynetdicom import evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

log = logging.getLogger(__name__)


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
        """Open what was not given and start listening (C-FIND reads the index).

        With DicomServerEnabled false the adapters are still opened (readiness
        checks hold) but nothing listens."""
        async with AsyncExitStack() as stack:
            self.adapters = await open_adapters(
                stack, self.settings, self.adapters, needs=self.NEEDS
            )
            if not self.settings.dicom_server_enabled:
                log.info("DICOM server disabled (DicomServerEnabled false): not listening")
                self._stack = stack.pop_all()
                return
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
        scp = StoreScp(
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
        add_retrieve_contexts(scp.ae)
        route_move_destinations(scp.ae)
        negotiation.supported = list(scp.ae.supported_contexts)
        # Negotiation sets every association's contexts: pynetdicom's per-association
        # deep copy of the listener's contexts only needs a placeholder.
        scp.listener_contexts = [
            cx for cx in negotiation.supported if cx.abstract_syntax == Verification
        ]
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
