"""``python -m perfsanity``."""

from perfsanity.cli import main

raise SystemExit(main())
