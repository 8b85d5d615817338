"""`python -m bench`: see bench/cli.py and docs/performance.md."""

from bench.cli import main

raise SystemExit(main())
