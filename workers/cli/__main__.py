"""``python -m workers.cli``: the ``scorefleet`` command."""

import sys

from workers.cli.commands import main

sys.exit(main())
