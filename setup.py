"""The optional C parts: the encoder (sls_beam/_speedups.c) and the lz4 bodies' worker
(sls_beam/_bodies.c); everything else is in pyproject.toml.

``optional=True``: where no C compiler is at hand the package installs without them,
encodes the same bytes in Python and compresses on a Python thread. ``SLS_BEAM_PURE_PYTHON=1`` builds a pure-Python
package (a ``py3-none-any`` wheel, for workers of another platform or Python).
"""

import os

from setuptools import Extension, setup

speedups = Extension("sls_beam._speedups", ["sls_beam/_speedups.c"], optional=True)
bodies = Extension(
    "sls_beam._bodies", ["sls_beam/_bodies.c"], extra_compile_args=["-pthread"], optional=True
)
setup(ext_modules=[] if os.environ.get("SLS_BEAM_PURE_PYTHON") else [speedups, bodies])
