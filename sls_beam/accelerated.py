"""The hot path's loops in C (``sls_beam/_speedups.c``), where the package was built with
a C compiler; else ``None``, and the callers give the same results in Python.

``SLS_BEAM_PURE_PYTHON=1`` rules the C ones out (to compare the two, or to rule them
out of a problem); it also builds the package without them.
"""

from __future__ import annotations

import os
from types import ModuleType

speedups: ModuleType | None
try:
    from sls_beam import _speedups as speedups
except ImportError:  # built without a C compiler
    speedups = None
if os.environ.get("SLS_BEAM_PURE_PYTHON"):
    speedups = None
