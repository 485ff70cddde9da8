"""The former home of the init comparison, kept so that ``from amortized.compare import ...`` still works: it now
lives in :mod:`amortized.comparison`."""

from amortized.comparison import *  # noqa: F401,F403
from amortized.comparison import __all__  # noqa: F401
