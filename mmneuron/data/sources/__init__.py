"""The dataset sources of ``mmneuron prepare``: name -> module, imported when asked for.

Every source module imports only the standard library and :mod:`.base` at the top (so that
``mmneuron --help``, which lists the sources' options, stays light) and defines ``DOMAIN`` (the
paper's domain it stands for, or None), ``LICENCE``, ``SPLITS`` (``stats``/``eval`` -> the
official split), optionally ``ONE_PER_IMAGE``, ``add_arguments(parser)`` and
``candidates(args, split)`` (see :mod:`.base`).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .base import SourceError

# Every source module under this package, by its command-line name.
SOURCES = ("docvqa", "folder", "lingoqa", "pmc_vqa", "rsvqa", "vqav2")


def load_source(name: str) -> ModuleType:
    """The source module called ``name``; an unknown name is a :class:`SourceError` listing the known ones."""
    if name not in SOURCES:
        raise SourceError(f"unknown dataset source {name!r}; known: {', '.join(SOURCES)}")
    return importlib.import_module(f"{__name__}.{name}")
