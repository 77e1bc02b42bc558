"""Entry point for `python -m tunesmith`."""

from tunesmith.cli import main

raise SystemExit(main())
