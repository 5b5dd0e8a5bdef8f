"""`python -m nanomoni` runs the `nanomoni` command."""

from nanomoni.cli import main

raise SystemExit(main())
