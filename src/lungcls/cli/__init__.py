"""The ``lungcls`` command line: a thin layer over the Python API.

Exit codes: 0 all went well; 1 some inputs failed (they are listed, the rest was done);
2 usage error (bad arguments, nothing usable to work on).
"""
# ruff: noqa: I001

# the order of these imports is the order of the commands in --help
from . import data  # noqa: F401
from . import seg  # noqa: F401
from . import cls  # noqa: F401
from . import pipeline  # noqa: F401
from . import serve  # noqa: F401
from .app import EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, app

__all__ = ["EXIT_INTERRUPTED", "EXIT_OK", "EXIT_SOME_FAILED", "EXIT_USAGE", "app", "main"]


def main() -> None:
    """Console-script entry point."""
    app()
