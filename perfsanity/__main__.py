"""``python -m perfsanity``."""

from perfsanity.bootstrap import reexec_from_checkout

reexec_from_checkout()  # from a checkout: under the project venv (uv.lock); an installed package runs as is

from perfsanity.cli import main  # noqa: E402

raise SystemExit(main())
