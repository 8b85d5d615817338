"""Subscribe to DicomKeep's change events: the at-least-once pattern, runnable.

    python examples/subscriber.py                          # Study.StableStudy
    python examples/subscriber.py 'Instance.*' '*.Deleted' --rest-url http://127.0.0.1:8042

What it does (docs/events.md):

1. declares its own durable queue (`--queue`), bound to the topic exchange
   `dicomkeep.changes` with the routing keys given (`<ResourceType>.<ChangeType>`,
   AMQP wildcards `*` and `#` allowed). The queue keeps events while the
   subscriber is down;
2. catches up with `GET /changes?since=<last seen Seq>` (the Seq is kept in the
   state file), for what happened before the queue existed. `/changes` does not
   list Deleted and job events: those come only from the queue;
3. consumes the queue: handles each event, saves the state, then acks. A crash
   between handling and ack means the event comes again: events are
   deduplicated by their AMQP `message_id` (stable per change; the recent ones
   are in the state file), and by `Seq` against what the catch-up handled.

Each change is written to stdout as one JSON line:
`{"change": <the GET /changes entry>, "routing_key": ..., "headers": {...},
"envelope": {"message_id": ..., "timestamp": ..., "type": ..., "app_id": ...,
"content_type": ...}, "source": "queue" | "changes"}` (an empty envelope for
what came from `/changes`).
`--max-messages N` and `--timeout S` stop it (exit 0); otherwise Ctrl-C.
Needs aio-pika (`pip install aio-pika`); the REST calls use the standard library.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import sys
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

EXCHANGE = "dicomkeep.changes"
#: How many recent Seqs the state file remembers for deduplication.
SEEN_WINDOW = 10_000
PAGE = 100


class State:
    """The last Seq handled and the recent keys handled, kept in a JSON file.

    A key is a message's `message_id` (the broker's deduplication key), or
    `seq:<Seq>` for every change handled (so that a change seen through the
    catch-up is not handled again when it also arrives from the queue).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.last = 0
        self.seen: list[str] = []
        if path.exists():
            raw = json.loads(path.read_text(encoding="utf-8"))
            self.last = int(raw.get("last", 0))
            self.seen = [str(key) for key in raw.get("seen", [])]
        self._seen_set = set(self.seen)

    def is_duplicate(self, keys: Sequence[str]) -> bool:
        """True when any key was handled already (a redelivery or a catch-up overlap)."""
        return any(key in self._seen_set for key in keys)

    def handled(self, seq: int, keys: Sequence[str]) -> None:
        """Record a handled change and save the file (atomically: write, then rename)."""
        self.last = max(self.last, seq)
        for key in keys:
            self.seen.append(key)
            self._seen_set.add(key)
        if len(self.seen) > SEEN_WINDOW:
            dropped = self.seen[: len(self.seen) - SEEN_WINDOW]
            self.seen = self.seen[len(dropped) :]
            self._seen_set.difference_update(dropped)
        temporary = self.path.with_suffix(self.path.suffix + ".tmp")
        temporary.write_text(json.dumps({"last": self.last, "seen": self.seen}), "utf-8")
        os.replace(temporary, self.path)


def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: `*` is exactly one word, `#` zero or more words."""

    def match(words: Sequence[str], keys: Sequence[str]) -> bool:
        if not words:
            return not keys
        if words[0] == "#":
            return any(match(words[1:], keys[i:]) for i in range(len(keys) + 1))
        if not keys:
            return False
        return (words[0] in ("*", keys[0])) and match(words[1:], keys[1:])

    return match(pattern.split("."), routing_key.split("."))


class Subscriber:
    """Prints the changes matching `bindings`, each once, until a stop condition."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.bindings: list[str] = args.routing_keys or ["Study.StableStudy"]
        self.state = State(Path(args.state))
        if args.since is not None:
            self.state.last = args.since
        self.count = 0
        self.done = asyncio.Event()

    def emit(
        self, change: dict[str, Any], headers: dict[str, str], envelope: dict[str, Any],
        source: str,
    ) -> None:
        """Handle one change (here: print it), once per message_id and Seq."""
        seq = int(change["Seq"])
        keys = [f"seq:{seq}"]
        if envelope.get("message_id"):
            keys.append(str(envelope["message_id"]))
        if self.state.is_duplicate(keys):
            sys.stderr.write(f"duplicate ignored seq={seq} "
                             f"message_id={envelope.get('message_id', '')}\n")
            sys.stderr.flush()
            return
        routing_key = f"{change['ResourceType']}.{change['ChangeType']}"
        line = {"change": change, "routing_key": routing_key, "headers": headers,
                "envelope": envelope, "source": source}
        print(json.dumps(line, sort_keys=True), flush=True)
        self.state.handled(seq, keys)
        self.count += 1
        if self.args.max_messages and self.count >= self.args.max_messages:
            self.done.set()

    def rest_get(self, path: str) -> Any:
        request = urllib.request.Request(self.args.rest_url.rstrip("/") + path)
        if self.args.user:
            token = base64.b64encode(f"{self.args.user}:{self.args.password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
            return json.loads(answer.read())

    def changes_since(self, since: int) -> Iterator[dict[str, Any]]:
        """Page through `GET /changes?since=` until `Done`."""
        while True:
            page = self.rest_get(f"/changes?since={since}&limit={PAGE}")
            yield from page["Changes"]
            if page["Done"] or not page["Changes"]:
                return
            since = int(page["Last"])

    async def catch_up(self) -> None:
        """Handle the logged changes committed since the last Seq handled."""
        since = self.state.last
        changes = await asyncio.to_thread(lambda: list(self.changes_since(since)))
        for change in changes:
            key = f"{change['ResourceType']}.{change['ChangeType']}"
            if any(topic_matches(pattern, key) for pattern in self.bindings):
                self.emit(change, {}, {}, "changes")
            if self.done.is_set():
                return

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        if self.done.is_set():
            await message.nack(requeue=True)  # stopping: leave it for the next run
            return
        change = json.loads(message.body)
        headers = {k: v.decode() if isinstance(v, bytes) else str(v)
                   for k, v in message.headers.items()}
        envelope = {
            "message_id": message.message_id,
            "timestamp": message.timestamp.isoformat() if message.timestamp else None,
            "type": message.type,
            "app_id": message.app_id,
            "content_type": message.content_type,
        }
        self.emit(change, headers, envelope, "queue")
        await message.ack()  # only after the change was handled and the state saved

    async def run(self) -> None:
        connection = await aio_pika.connect_robust(self.args.amqp_url)
        try:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=64)
            exchange = await channel.declare_exchange(
                EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
            )
            queue = await channel.declare_queue(
                self.args.queue, durable=True, arguments={"x-queue-type": "quorum"}
            )
            for pattern in self.bindings:
                await queue.bind(exchange, routing_key=pattern)
            # Bound first, then caught up: nothing committed in between is missed.
            await self.catch_up()
            if not self.done.is_set():
                tag = await queue.consume(self.on_message)
                sys.stderr.write(f"listening queue={self.args.queue} since={self.state.last}\n")
                sys.stderr.flush()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.done.wait(), self.args.timeout)
                await queue.cancel(tag)
        finally:
            await connection.close()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Print DicomKeep change events, each once.")
    parser.add_argument("routing_keys", nargs="*", metavar="ROUTING_KEY",
                        help="binding keys, e.g. Study.StableStudy 'Instance.*' '#'"
                             " (default Study.StableStudy)")
    parser.add_argument("--amqp-url", default=os.environ.get(
        "DICOMKEEP_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"))
    parser.add_argument("--rest-url", default=os.environ.get(
        "DICOMKEEP_URL", "http://127.0.0.1:8042"))
    parser.add_argument("--user", default=os.environ.get("DICOMKEEP_USER", ""))
    parser.add_argument("--password", default=os.environ.get("DICOMKEEP_PASSWORD", ""))
    parser.add_argument("--queue", default="dicomkeep-subscriber-example",
                        help="this subscriber's own durable queue")
    parser.add_argument("--state", default="subscriber-state.json",
                        help="file keeping the last Seq handled")
    parser.add_argument("--since", type=int, default=None,
                        help="catch up from this Seq instead of the state file's")
    parser.add_argument("--max-messages", type=int, default=0,
                        help="stop after handling N changes (0 = no limit)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="stop after S seconds of listening")
    return parser.parse_args(argv)


async def main(argv: Sequence[str] | None = None) -> int:
    subscriber = Subscriber(parse_args(argv))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, subscriber.done.set)
    await subscriber.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
