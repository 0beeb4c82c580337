"""``python -m sftbook``: see :mod:`sftbook.cli`."""

import sys

from sftbook.cli import main

sys.exit(main())
