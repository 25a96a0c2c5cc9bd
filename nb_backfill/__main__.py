"""`python -m nb_backfill`: the `nb-backfill` command line."""

if __name__ == "__main__":  # guarded, as the process executor asks of the script that launches it
    from .cli import main

    raise SystemExit(main())
