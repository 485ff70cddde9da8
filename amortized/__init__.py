"""Amortized CartoonX: target shards, the learned initializer, comparisons and the ``cartoonx`` command."""

import os as _os

_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as rde/__init__.py: before torch loads OpenMP
