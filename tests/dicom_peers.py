"""Remote DICOM peers for the tests: DCMTK's storescp and an in-process storage SCP.

The in-process SCPs may be used as soon as `start()` returns: pynetdicom's
`start_server(block=False)` binds and listens (socketserver's bind_and_activate)
before it starts the accepting thread, so an early association waits in the
listen backlog rather than being refused.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from servers import dcmtk, free_port


@dataclass
class StoreScpProcess:
    """A running DCMTK storescp: its AET, port and the folder it writes to."""

    aet: str
    port: int
    folder: Path
    process: subprocess.Popen[bytes]

    def files(self) -> list[Path]:
        """The files received so far (storescp writes each one whole before renaming)."""
        return sorted(p for p in self.folder.iterdir() if p.is_file() and not p.name.startswith("."))

    def clear(self) -> None:
        for path in self.files():
            path.unlink()


@contextmanager
def storescp(folder: Path, aet: str = "STORESCP", port: int | None = None) -> Iterator[StoreScpProcess]:
    """Run DCMTK's storescp (TCP_NODELAY on, as INFRA.md advises) until the block ends."""
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    process = subprocess.Popen(
        [dcmtk("storescp"), "--fork", "-aet", aet, "-od", str(folder), "-uf", str(port)],
        env={**os.environ, "TCP_NODELAY": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not _listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("storescp did not start")
            time.sleep(0.05)
        yield StoreScpProcess(aet, port, folder, process)
    finally:
        process.terminate()
        process.wait(10)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class StorageScp:
    """An in-process C-STORE SCP recording what it receives.

    `delay` slows every C-STORE (seconds); `silent` makes the first `silent`
    C-STOREs go unanswered for `silent_for` seconds (a lost response, from the
    sender's side).
    """

    aet: str = "PYSCP"
    delay: float = 0.0
    silent: int = 0
    silent_for: float = 0.0
    received: list[str] = field(default_factory=list)
    associations: int = 0
    port: int = 0
    _server: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> StorageScp:
        ae = AE(ae_title=self.aet)
        ae.add_supported_context(Verification)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.maximum_associations = 32
        self.port = free_port()
        handlers = [(evt.EVT_C_STORE, self._store), (evt.EVT_ESTABLISHED, self._established)]
        self._server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _established(self, event: Any) -> None:
        with self._lock:
            self.associations += 1

    def _store(self, event: Any) -> int:
        dataset: Dataset = event.dataset
        with self._lock:
            silent = self.silent > 0
            self.silent -= 1 if silent else 0
        if silent:
            time.sleep(self.silent_for)
            return 0xC000  # too late: the sender gave up on this response
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            self.received.append(str(dataset.SOPInstanceUID))
        return 0x0000


@contextmanager
def storage_scp(**options: Any) -> Iterator[StorageScp]:
    """Run a StorageScp until the block ends."""
    scp = StorageScp(**options).start()
    try:
        yield scp
    finally:
        scp.stop()


@dataclass
class FindRequest:
    """One C-FIND a FindScp received: who asked, and the identifier by keyword."""

    calling_aet: str
    identifier: dict[str, str]


@dataclass
class FindScp:
    """An in-process Study Root C-FIND SCP recording each request.

    Answers one match per request, echoing the identifier with its level's keys
    filled from `answer` (keyword -> value); a request with a value in `slow` waits
    `delay` seconds before answering (an SCU timeout, from its side).
    """

    aet: str = "FINDSCP"
    answer: dict[str, str] = field(default_factory=dict)
    slow: set[str] = field(default_factory=set)
    delay: float = 0.0
    requests: list[FindRequest] = field(default_factory=list)
    port: int = 0
    _server: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> FindScp:
        from pynetdicom.sop_class import (  # type: ignore[attr-defined]
            PatientRootQueryRetrieveInformationModelFind,
            StudyRootQueryRetrieveInformationModelFind,
        )

        ae = AE(ae_title=self.aet)
        ae.add_supported_context(Verification)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(PatientRootQueryRetrieveInformationModelFind, ALL_TRANSFER_SYNTAXES)
        ae.require_called_aet = False
        self.port = free_port()
        handlers = [(evt.EVT_C_FIND, self._find)]
        self._server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def clear(self) -> list[FindRequest]:
        """Return the requests received so far and forget them."""
        with self._lock:
            seen, self.requests = self.requests, []
        return seen

    def _find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        identifier: Dataset = event.identifier
        keys = {element.keyword or str(element.tag): str(element.value or "") for element in identifier}
        with self._lock:
            self.requests.append(FindRequest(str(event.assoc.requestor.ae_title).strip(), keys))
        if self.slow & set(keys.values()):
            time.sleep(self.delay)
        match = Dataset()
        for element in identifier:
            match.add(element)
        for keyword, value in self.answer.items():
            if keyword in match and not str(match.data_element(keyword).value or ""):
                setattr(match, keyword, value)
        yield 0xFF00, match


@contextmanager
def find_scp(**options: Any) -> Iterator[FindScp]:
    """Run a FindScp until the block ends."""
    scp = FindScp(**options).start()
    try:
        yield scp
    finally:
        scp.stop()
