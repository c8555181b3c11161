"""``python -m terarec`` is the same as the ``terarec`` command."""

from terarec.cli.main import main

raise SystemExit(main())
