"""Build script for the Cython hot path under engine/_native.

The .pyx sources are compiled at install time; no generated C is committed.
QUORUMKV_CYTHON_TRACE=1 builds with line tracing (coverage, profilers),
QUORUMKV_CYTHON_ANNOTATE=1 writes the HTML annotation next to each .pyx.
"""
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

NATIVE_MODULES = [
    "crc32c",
    "sequencer",
    "wal_frame",
    "skiplist",
    "cursor",
    "sstable_block",
    "bloom",
    "table_builder",
    "merge",
    "write_batch",
    "table_cursor",
    "block_cache",
    "table_reader",
    "commit",
    "u64_map",
]

trace = os.environ.get("QUORUMKV_CYTHON_TRACE") == "1"
macros = [("CYTHON_TRACE_NOGIL", "1")] if trace else []
compile_args = ["-O3", "-Wall", "-Wno-unused-function", "-Wno-unreachable-code"]

extensions = [
    Extension(
        f"engine._native.{name}",
        [f"engine/_native/{name}.pyx"],
        include_dirs=[numpy.get_include(), "engine/_native"],
        define_macros=macros + [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
    )
    for name in NATIVE_MODULES
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        annotate=os.environ.get("QUORUMKV_CYTHON_ANNOTATE") == "1",
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "linetrace": trace,
        },
    )
)
