"""`dicomkeep dlq list|replay|purge` on a real RabbitMQ (a virtual host of its own).

Dead letters come from RabbitBus itself: an undecodable message is dead-lettered at
once, a message whose handler keeps failing after the delivery limit; the command
lists them, replays those of one queue to it once the handler works, and purges
the rest.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from dicomkeep.common.adapters.rabbit_bus import RabbitBus
from dicomkeep.common.events import Change
from servers import DICOMKEEP, rabbit_vhost

POISONED = "dicomkeep.test.poisoned"
FAILING = "dicomkeep.test.failing"


@pytest.fixture
def amqp_url() -> Iterator[str]:
    with rabbit_vhost(f"dk_dlq_{uuid.uuid4().hex[:10]}") as url:
        yield url


def dlq(tmp_path: Path, url: str, *args: str) -> list[str]:
    """Run `dicomkeep dlq ARGS` with a configuration naming `url`; its output lines."""
    config = tmp_path / "dlq.json"
    config.write_text(json.dumps({"RabbitMQ": {"Url": url}}), encoding="utf-8")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DICOMKEEP_")}
    done = subprocess.run(
        [DICOMKEEP, "dlq", *args[:1], str(config), *args[1:]],
        capture_output=True, text=True, timeout=60, env=environ, check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


async def wait_dead_letters(tmp_path: Path, url: str, count: int) -> list[str]:
    loop = asyncio.get_running_loop()
    end = loop.time() + 60
    while True:
        lines = await asyncio.to_thread(dlq, tmp_path, url, "list")
        if lines[-1] == f"{count} dead letters found" or loop.time() > end:
            return lines
        await asyncio.sleep(0.2)


async def test_dead_letters_are_listed_replayed_and_purged(tmp_path: Path, amqp_url: str) -> None:
    bus = RabbitBus(amqp_url, name="dk-dlq-test", delivery_limit=1)
    await bus.start()
    working = False
    handled: list[bytes] = []

    async def decode(body: bytes, headers: Mapping[str, str]) -> None:
        Change.model_validate_json(body)

    async def fail_until_fixed(body: bytes, headers: Mapping[str, str]) -> None:
        if not working:
            raise RuntimeError("a bug, fixed later")
        handled.append(body)

    try:
        await bus.consume(POISONED, [("dk.test", "poisoned")], decode, prefetch=1)
        await bus.consume(FAILING, [("dk.test", "failing")], fail_until_fixed, prefetch=1)
        await bus.publish("dk.test", "poisoned", b"not json", {})
        await bus.publish("dk.test", "failing", b"fails twice", {})

        lines = await wait_dead_letters(tmp_path, amqp_url, 2)
        assert lines[-1] == "2 dead letters found", lines
        by_queue = {line.split()[1]: line for line in lines[:-1]}
        assert "reason=rejected" in by_queue[f"queue={POISONED}"]
        assert "reason=delivery_limit" in by_queue[f"queue={FAILING}"]
        assert all(line.startswith("kept") for line in lines[:-1])
        # Listing changes nothing.
        assert (await wait_dead_letters(tmp_path, amqp_url, 2))[-1] == "2 dead letters found"

        working = True
        replayed = await asyncio.to_thread(dlq, tmp_path, amqp_url, "replay", "--queue", FAILING)
        assert replayed[-1] == "1 dead letters replayed", replayed
        loop = asyncio.get_running_loop()
        end = loop.time() + 30
        while handled != [b"fails twice"]:
            assert loop.time() < end, "the replayed message was not handled"
            await asyncio.sleep(0.05)
        remaining = await wait_dead_letters(tmp_path, amqp_url, 1)
        assert remaining[-1] == "1 dead letters found" and f"queue={POISONED}" in remaining[0]

        purged = await asyncio.to_thread(dlq, tmp_path, amqp_url, "purge")
        assert purged[-1] == "1 dead letters purged", purged
        assert (await asyncio.to_thread(dlq, tmp_path, amqp_url, "list"))[-1] == (
            "0 dead letters found")
    finally:
        await bus.close()
