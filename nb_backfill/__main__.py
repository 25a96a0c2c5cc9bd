"""`python -m nb_backfill`: the `nb-backfill` command line."""

from .cli import main

raise SystemExit(main())
