"""Build step for ringkv: compile the hot modules with Cython (docs/decisions.md D21).

pyproject.toml holds the metadata; this file only adds the extension modules. The
modules stay plain Python: ringkv/compiled.py lists them and chooses, at import, the
extension or the source. The build never fails for want of a compiler: without Cython,
without a C compiler, or with RINGKV_PURE_PYTHON=1 set, it installs the source alone
and says so.
"""

import os
import runpy
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
_LISTS = runpy.run_path(os.path.join(HERE, "ringkv", "compiled.py"))
COMPILED, NATIVE = _LISTS["COMPILED"], _LISTS["NATIVE"]


def _say(msg: str) -> None:
    print(f"ringkv build: {msg}", file=sys.stderr)


class OptionalBuildExt(build_ext):
    """Builds the extensions in parallel; on any compiler error, installs source only."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if not self.parallel:
            self.parallel = os.cpu_count() or 1

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # a missing or failing compiler: run from source
            _say(f"compiling failed ({exc}); ringkv will run from Python source")


def _extensions() -> list:
    if os.environ.get("RINGKV_PURE_PYTHON", "") not in ("", "0"):
        _say("RINGKV_PURE_PYTHON set: not compiling")
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        _say("Cython not available: not compiling")
        return []
    paths = [os.path.join(*name.split(".")) + ".py" for name in COMPILED]
    paths += [os.path.join(*name.split(".")) + ".pyx" for name in NATIVE]
    return cythonize(paths, language_level=3, quiet=True, nthreads=os.cpu_count() or 1,
                     build_dir="build/cython",
                     compiler_directives={"binding": True, "embedsignature": True,
                                          "annotation_typing": False})


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
