"""``python -m amortized``: the ``cartoonx`` command."""

import sys

from amortized.cli import main

sys.exit(main())
