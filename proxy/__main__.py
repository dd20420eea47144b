"""`python -m proxy`: the command line lives in cli.py."""

from proxy.cli import main

raise SystemExit(main())
