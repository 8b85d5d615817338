"""`python -m dicomkeep.gateway [CONFIG]`: the gateway alone, on the configured adapters."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging

from dicomkeep.common.option_support import check_options
from dicomkeep.common.settings import load_settings
from dicomkeep.gateway.main import run


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, load the settings and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m dicomkeep.gateway")
    parser.add_argument("config", nargs="?", help="Orthanc-style JSON file or folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = check_options(load_settings(args.config))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(settings, lambda: load_settings(args.config)))


if __name__ == "__main__":
    main()
