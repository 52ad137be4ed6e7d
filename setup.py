"""The optional C encoder (sls_beam/_speedups.c); everything else is in pyproject.toml.

``optional=True``: where no C compiler is at hand the package installs without it and
encodes the same bytes in Python. ``SLS_BEAM_PURE_PYTHON=1`` builds a pure-Python
package (a ``py3-none-any`` wheel, for workers of another platform or Python).
"""

import os

from setuptools import Extension, setup

speedups = Extension("sls_beam._speedups", ["sls_beam/_speedups.c"], optional=True)
setup(ext_modules=[] if os.environ.get("SLS_BEAM_PURE_PYTHON") else [speedups])
