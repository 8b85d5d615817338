"""The jobs engine of one process: `ConcurrentJobs` workers claiming jobs from the index.

Each worker loops: claim the next job (highest priority first) under a lease, run
it while a heartbeat renews the lease, saves its checkpoint and picks up cancel or
pause requests, then record its outcome. Any number of processes cooperate
through the index; a process that dies leaves its jobs Running until their lease
expires, and the next claim moves them to Retry and resumes them from their
checkpoint (`attempts` counts the runs). Workers wake on a RunJob message and
poll anyway, so a lost message only delays a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid

from dicomkeep.common.errors import ErrorCode, unavailability
from dicomkeep.common.index import JobOutcome, JobRecord, JobStore, JobUpdate, LeaseLost
from dicomkeep.common.metrics import JOB_SECONDS, JOBS_FINISHED, JOBS_RUNNING
from dicomkeep.common.retries import retrying
from dicomkeep.common.telemetry import tracer
from dicomkeep.jobs.usecases import Deps, Executor, JobRun, execute, failure
from tenacity import RetryCallState

log = logging.getLogger(__name__)

#: Seconds a claimed job stays ours without a heartbeat (a dead worker's jobs
#: are resumed elsewhere after this).
LEASE_SECONDS = 10.0
#: Longest wait between two claims while the index is unreachable (seconds).
OUTAGE_WAIT = 30.0


def worker_name() -> str:
    """Return a name unique to this process (host, pid, random suffix)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class JobWorkers:
    """`concurrency` worker tasks on one event loop (see the module docstring)."""

    def __init__(
        self,
        store: JobStore,
        deps: Deps,
        *,
        concurrency: int,
        history_size: int,
        lease: float = LEASE_SECONDS,
        poll: float = 1.0,
        execute_job: Executor = execute,
    ) -> None:
        self.store = store
        self.deps = deps
        self.concurrency = max(1, concurrency)
        self.history_size = history_size
        self.lease = lease
        self.poll = poll
        self.name = worker_name()
        self._execute = execute_job
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        #: True while the index is unreachable (logged once for every worker task).
        self._outage = False

    def start(self) -> None:
        """Start the worker tasks."""
        self._tasks = [
            asyncio.create_task(self._loop(), name=f"jobs-worker-{n}")
            for n in range(self.concurrency)
        ]
        log.info("jobs workers started worker=%s concurrency=%d", self.name, self.concurrency)

    async def stop(self) -> None:
        """Stop the workers; the jobs they were running go back to the queue (Retry)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def wake(self) -> None:
        """Make idle workers look for a job now."""
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                job = await self._claim()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not claim a job; retrying")
                job = None
            if job is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll)
                continue
            self._wake.set()  # another idle worker may take the next job
            await self.run(job)

    async def _claim(self) -> JobRecord | None:
        """Claim the next job. While the index cannot be reached, wait and try again
        with exponential backoff (up to OUTAGE_WAIT seconds between attempts):
        one warning line when the outage starts and one when it ends, for all the
        workers of the process, never a traceback per attempt (issue 15)."""

        def note_outage(state: RetryCallState) -> None:
            if not self._outage:
                self._outage = True
                error = state.outcome.exception() if state.outcome is not None else None
                log.warning(
                    "index unavailable, jobs wait and retry with backoff worker=%s error=%s: %s",
                    self.name, type(error).__name__, error,
                )

        policy = retrying(
            "claim a job", first=min(self.poll, 0.5), longest=OUTAGE_WAIT,
            when=lambda error: unavailability(error) is not None,
        ).copy(before_sleep=note_outage)
        async for attempt in policy:
            with attempt:
                job = await self.store.claim_job(self.name, self.lease)
        if self._outage:
            self._outage = False
            log.warning("index available again, jobs resume worker=%s", self.name)
        return job

    async def run(self, job: JobRecord) -> JobRecord | None:
        """Run one claimed job to its outcome and record it; None if the lease was lost."""
        log.info(
            "job started job_id=%s type=%s attempt=%d worker=%s",
            job.id, job.type, job.attempts, self.name,
        )
        run = JobRun(job)
        beat = asyncio.create_task(self._heartbeat(job, run), name=f"job-heartbeat-{job.id}")
        started = time.monotonic()
        JOBS_RUNNING.inc()
        try:
            with tracer().start_as_current_span(
                f"job {job.type}",
                attributes={"dicomkeep.job_id": job.id, "dicomkeep.job_type": job.type,
                            "dicomkeep.job_attempt": job.attempts},
            ) as span:
                outcome = await self._execute(job, run, self.deps)
                span.set_attribute("dicomkeep.job_state", str(outcome.state.value))
        except asyncio.CancelledError:
            beat.cancel()
            with contextlib.suppress(Exception):
                await asyncio.shield(self.store.release_job(job.id, self.name, run.update))
            log.info("job released at shutdown job_id=%s", job.id)
            raise
        except Exception as error:
            log.exception("job failed unexpectedly job_id=%s", job.id)
            update = run.update or JobUpdate(job.progress, job.content, job.payload)
            outcome = failure(update, ErrorCode.INTERNAL_ERROR, str(error))
        finally:
            JOBS_RUNNING.dec()
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        JOB_SECONDS.observe(time.monotonic() - started)
        JOBS_FINISHED.labels(outcome.state.value).inc()
        return await self._finish(job, run, outcome)

    async def _finish(self, job: JobRecord, run: JobRun, outcome: JobOutcome) -> JobRecord | None:
        if run.lost:
            log.warning("job taken over by another worker job_id=%s", job.id)
            return None
        try:
            done = await self.store.finish_job(job.id, self.name, outcome, self.history_size)
        except LeaseLost:
            log.warning("job taken over by another worker job_id=%s", job.id)
            return None
        log.info(
            "job ended job_id=%s state=%s error=%d details=%s",
            job.id, done.state.value, done.error_code, done.error_details,
        )
        return done

    async def _heartbeat(self, job: JobRecord, run: JobRun) -> None:
        """Renew the lease, save the checkpoint, pass on cancel/pause requests."""
        interval = min(1.0, self.lease / 3)
        outage = False
        while True:
            await asyncio.sleep(interval)
            update, run.update = run.update, None
            try:
                action = await self.store.renew_job(job.id, self.name, self.lease, update)
            except LeaseLost:
                run.lost = True
                return
            except asyncio.CancelledError:
                run.update = run.update or update
                raise
            except Exception as error:
                run.update = run.update or update
                if unavailability(error) is None:
                    log.exception("heartbeat failed job_id=%s", job.id)
                elif not outage:  # one line per outage, not a traceback per beat
                    log.warning("heartbeat waits for the index job_id=%s error=%s: %s",
                                job.id, type(error).__name__, error)
                outage = True
                continue
            outage = False
            if action is not None:
                run.requested = action
