"""Builds the optional fused CPU kernel (lse_material/_kernel.c); the metadata is in pyproject.toml.

The kernel is a plain C shared library loaded with ctypes (no Python C API). If it cannot be
built (no C compiler), the install still succeeds and lse-material uses its torch path.
"""

import sys

from setuptools import Extension, setup

flags = [] if sys.platform == "win32" else ["-O3", "-fno-trapping-math", "-fno-math-errno"]
setup(
    ext_modules=[
        Extension(
            "lse_material._kernel",
            sources=["lse_material/_kernel.c"],
            extra_compile_args=flags,
            optional=True,
        )
    ]
)
