"""Senders that stream instances through a fault, and the checks made after it.

Two senders run at once: a C-STORE SCU (pynetdicom, one association, opened
again when the server drops it) and a REST client (POST /instances, on each
gateway replica in turn). Each records, per instance, whether the server
acknowledged it (DIMSE status 0x0000, HTTP 200) and every failure it was told
of; an instance that failed is sent again (as a PACS-sending modality does) until
it is acknowledged or the sender's deadline passes.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from io import BytesIO

import httpx
from dicomkeep.common.ids import hierarchy_ids
from pydicom import dcmread
from pynetdicom import AE, StoragePresentationContexts
from servers import Server, blob_keys, wait_until
from synthetic import GeneratedInstance, generate_study

#: `report(fault, instances, acknowledged, failures_reported)` (the `fault_report` fixture).
Report = Callable[[str, int, int, int], None]
#: Instances per study: 2 series of 10.
SERIES, PER_SERIES = 2, 10
#: How long a sender keeps trying one stream (a fault lasts seconds).
SEND_DEADLINE = 600.0
#: The pause before a failed instance is sent again.
RETRY_PAUSE = 0.2


@dataclass(frozen=True)
class Item:
    """One instance to send, with the Orthanc IDs it must get."""

    data: bytes
    patient: str
    study: str
    series: str
    instance: str


def make_items(count: int, seed: int, *, per_series: int = PER_SERIES) -> list[Item]:
    """`count` distinct instances (studies of 2 series, one patient each), in order."""
    items: list[Item] = []
    study = 0
    while len(items) < count:
        for g in generate_study(series=SERIES, instances_per_series=per_series,
                                seed=seed * 1000 + study, rows=16, columns=16):
            items.append(_item(g))
        study += 1
    return items[:count]


def _item(g: GeneratedInstance) -> Item:
    patient, study, series, instance = hierarchy_ids(
        g.patient_id, g.study_uid, g.series_uid, g.sop_uid)
    return Item(g.data, patient, study, series, instance)


@dataclass
class Ledger:
    """What the senders were told: acknowledged instances and reported failures."""

    acked: dict[str, Item] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ack(self, item: Item) -> None:
        with self.lock:
            self.acked[item.instance] = item

    def fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)

    @property
    def acked_count(self) -> int:
        with self.lock:
            return len(self.acked)


def c_store_sender(server: Server, items: list[Item], ledger: Ledger) -> None:
    """Send `items` over C-STORE; reassociate after an abort; retry failed ones."""
    ae = AE(ae_title="FAULTSCU")
    ae.requested_contexts = StoragePresentationContexts[:100]
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    deadline = time.monotonic() + SEND_DEADLINE
    assoc = None
    pending = list(items)
    try:
        while pending and time.monotonic() < deadline:
            if assoc is None or not assoc.is_established:
                assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.aet)
                if not assoc.is_established:
                    ledger.fail("dicom: association refused or aborted")
                    time.sleep(RETRY_PAUSE)
                    continue
            item = pending[0]
            try:
                status = assoc.send_c_store(dcmread(BytesIO(item.data)))
            except (RuntimeError, OSError) as error:  # the association went meanwhile
                ledger.fail(f"dicom: {error}")
                assoc = None
                continue
            code = getattr(status, "Status", None)
            if code == 0x0000:
                ledger.ack(item)
                pending.pop(0)
            else:
                ledger.fail("dicom: no response" if code is None else f"dicom: 0x{code:04X}")
                time.sleep(RETRY_PAUSE)
    finally:
        if assoc is not None and assoc.is_established:
            assoc.release()
    if pending:
        ledger.fail(f"dicom: gave up with {len(pending)} instances unsent")


def rest_sender(server: Server, items: list[Item], ledger: Ledger) -> None:
    """Send `items` with POST /instances, on each replica in turn; retry failed ones."""
    deadline = time.monotonic() + SEND_DEADLINE
    pending = list(items)
    replica = 0
    clients = [server.client(n) for n in range(len(server.urls))]
    try:
        while pending and time.monotonic() < deadline:
            item = pending[0]
            client = clients[replica % len(clients)]
            replica += 1
            try:
                answer = client.post("/instances", content=item.data)
            except httpx.HTTPError as error:
                ledger.fail(f"rest: {type(error).__name__}")
                time.sleep(RETRY_PAUSE)
                continue
            if answer.status_code == 200 and answer.json().get("ID") == item.instance:
                ledger.ack(item)
                pending.pop(0)
            else:
                ledger.fail(f"rest: HTTP {answer.status_code}")
                time.sleep(RETRY_PAUSE)
    finally:
        for client in clients:
            client.close()
    if pending:
        ledger.fail(f"rest: gave up with {len(pending)} instances unsent")


def split_by_study(items: list[Item]) -> tuple[list[Item], list[Item]]:
    """Alternate whole studies between the two senders."""
    order = list(dict.fromkeys(item.study for item in items))
    first = {study for n, study in enumerate(order) if n % 2 == 0}
    return ([i for i in items if i.study in first], [i for i in items if i.study not in first])


def stream_through(
    server: Server, items: list[Item], fault: Callable[[], None], *,
    fault_after: float = 1 / 3, by_study: bool = False,
) -> Ledger:
    """Stream `items` (half over C-STORE, half over REST: alternate instances, or
    alternate studies when `by_study`); once `fault_after` of them are
    acknowledged, run `fault` (which breaks something and repairs it); return the
    ledger once both senders are done."""
    ledger = Ledger()
    dicom, rest = split_by_study(items) if by_study else (items[0::2], items[1::2])
    senders = [
        threading.Thread(target=c_store_sender, args=(server, dicom, ledger)),
        threading.Thread(target=rest_sender, args=(server, rest, ledger)),
    ]
    for sender in senders:
        sender.start()
    try:
        wait_until(lambda: ledger.acked_count >= len(items) * fault_after
                   or not any(s.is_alive() for s in senders),
                   timeout=SEND_DEADLINE, what="the senders to get going")
        fault()
    finally:
        for sender in senders:
            sender.join(SEND_DEADLINE + 60)
    return ledger


# -- checks ------------------------------------------------------------------------------


def dataset_bytes(data: bytes) -> bytes:
    """The data set of a DICOM file, after its file meta information.

    A C-STORE carries the data set only: the receiver writes the file meta (its own
    implementation UID, the calling AET), as Orthanc does; the data set must come
    back byte for byte (and a REST upload's whole file does, which includes it).
    """
    assert data[128:132] == b"DICM", "not a DICOM file with a preamble"
    group, element = struct.unpack("<HH", data[132:136])
    assert (group, element) == (0x0002, 0x0000), "no file meta group length"
    length = struct.unpack("<I", data[140:144])[0]
    return data[144 + length:]


def all_changes(client: httpx.Client, since: int = 0) -> list[dict]:
    """Every /changes entry after `since`, page by page."""
    changes: list[dict] = []
    while True:
        page = client.get("/changes", params={"since": since, "limit": 1000}).json()
        changes += page["Changes"]
        if page["Done"] or not page["Changes"]:
            return changes
        since = page["Last"]


def last_seq(client: httpx.Client) -> int:
    return int(client.get("/changes", params={"last": ""}).json()["Last"])


def check_after_fault(server: Server, items: list[Item], ledger: Ledger, since: int) -> None:
    """What must hold once a fault is over (see docs/reliability.md):

    every acknowledged instance is present and byte-identical (and so is every other
    instance present: a store reported failed may have committed); every instance
    was indexed once (one NewInstance each); the changes since `since` have no Seq
    gap or duplicate; every study got its StableStudy after its last instance.
    """
    assert not any("gave up" in f for f in ledger.failures), ledger.failures[-5:]
    expected = {item.instance: item for item in items}
    with server.client() as client:
        present = set(client.get("/instances").json())
        mine = present & expected.keys()
        missing = set(ledger.acked) - present
        assert not missing, f"{len(missing)} acknowledged instances are missing"
        assert mine == expected.keys(), "the senders retried until every instance was stored"
        check_identical(client, [expected[i] for i in sorted(mine)])
        changes = all_changes(client, since)
        seqs = [c["Seq"] for c in changes]
        assert seqs == list(range(since + 1, since + 1 + len(seqs))), "Seq gap or duplicate"
        new = [c["ID"] for c in changes if c["ChangeType"] == "NewInstance"]
        assert sorted(new) == sorted(mine), "an instance was indexed twice (or not at all)"
    wait_stable(server, items, since)


def check_identical(client: httpx.Client, items: Iterable[Item]) -> None:
    """Each of `items` reads back with the data set it was sent with."""
    for item in items:
        try:
            answer = client.get(f"/instances/{item.instance}/file")
        except httpx.RemoteProtocolError:
            # A kept-alive connection the server closed as idle (1 s, Orthanc's
            # KeepAliveTimeout) while this request was on its way: seen once at load
            # 20+, when the client's own 0.5 s expiry came too late. A GET is safe
            # to send again on a new connection.
            answer = client.get(f"/instances/{item.instance}/file")
        assert answer.status_code == 200, (item.instance, answer.status_code)
        assert dataset_bytes(answer.content) == dataset_bytes(item.data), (
            f"{item.instance} differs")


def check_seqs(changes: list[dict]) -> None:
    """Seq strictly increasing: no duplicate, nothing out of order."""
    seqs = [c["Seq"] for c in changes]
    assert seqs == sorted(set(seqs)), "Seq duplicate or out of order"


def wait_stable(server: Server, items: Iterable[Item], since: int, timeout: float = 120) -> None:
    """Wait until each study of `items` has a StableStudy after its last NewInstance."""
    studies = {item.study for item in items}

    def all_stable() -> bool:
        with server.client() as client:
            changes = all_changes(client, since)
        last_new: dict[str, int] = {}
        stable: dict[str, int] = {}
        by_instance = {item.instance: item.study for item in items}
        for change in changes:
            if change["ChangeType"] == "NewInstance" and change["ID"] in by_instance:
                last_new[by_instance[change["ID"]]] = change["Seq"]
            elif change["ChangeType"] == "StableStudy":
                stable[change["ID"]] = change["Seq"]
        return all(stable.get(s, -1) > last_new.get(s, 0) for s in studies)

    wait_until(all_stable, timeout=timeout, what="StableStudy of every study")


def referenced_blobs(server: Server) -> set[str]:
    """The blob keys of the instances the server holds (`FileUuid`: the suite runs
    without compression, so the DICOM file is each instance's only attachment)."""
    keys: set[str] = set()
    seen = 0
    with server.client() as client:
        # Paged: a full run holds ~10,000 instances, whose one expanded list can
        # outlast the client's timeout on a loaded machine.
        while True:
            page = client.get("/instances", params={"expand": "", "since": seen,
                                                    "limit": 500}).json()
            keys.update(instance["FileUuid"] for instance in page)
            seen += len(page)
            if len(page) < 500:
                return keys


def check_no_orphan_blob(server: Server, timeout: float = 120) -> None:
    """Every blob is referenced by an attachment, once the collector has run, and
    every attachment's blob exists."""
    referenced = referenced_blobs(server)
    wait_until(lambda: set(blob_keys(server)) == referenced, timeout=timeout,
               what="orphan blobs to be collected")
