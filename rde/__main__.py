"""``python -m rde``: the ``cartoonx`` command (its ``explain`` subcommand is the command line of this library).

The command lives in ``amortized.cli``; it is imported here, in the entry point only, never by the library.
"""

import importlib
import sys

sys.exit(importlib.import_module("amortized.cli").main())
