"""The ``llmimg`` command line (see :mod:`llmimg.cli.main`)."""

from llmimg.cli.main import main

__all__ = ["main"]
