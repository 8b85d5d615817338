"""What `POST /tools/reset` and `/tools/shutdown` ask of the process serving the REST API.

Orthanc leaves its main loop on either call (`OrthancRestApi::ResetOrthanc`,
`ShutdownOrthanc`) once the answer `{}` is sent; a reset then starts again with
the configuration read anew. Here the routes set a `ProcessControl`, and the
process's runner (`dicomkeep serve`, `dicomkeep run gateway`) stops its services
when it is set, and, for a reset, builds and starts them again.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


class ProcessControl:
    """A request to stop (or to restart) the process, set once by the REST API."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        #: True when the request is a reset (stop, read the configuration again, start).
        self.reset = False

    def request_shutdown(self) -> None:
        """Ask the runner to stop the process's services and exit (idempotent)."""
        log.warning("shutdown request received")
        self.requested.set()

    def request_reset(self) -> None:
        """Ask the runner to restart the services with the configuration read again."""
        log.warning("reset request received")
        self.reset = True
        self.requested.set()
