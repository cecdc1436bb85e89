"""Builds the pystats extension against libstats installed in $PREFIX (by the recipe's source step)."""

import os

from pybind11.setup_helpers import Pybind11Extension
from setuptools import setup

prefix = os.environ.get("PREFIX", "/usr/local")

setup(
    ext_modules=[
        Pybind11Extension(
            "pystats",
            ["src/pystats.cpp"],
            include_dirs=[os.path.join(prefix, "include")],
            library_dirs=[os.path.join(prefix, "lib"), os.path.join(prefix, "lib64")],
            libraries=["stats"],  # links libstats.so -> DT_NEEDED libstats.so.1, bundled into lib/
            cxx_std=17,
        )
    ]
)
