"""Finding the data that ships inside installed packages (FanOutQA, easy-VQA).

The packages are located with :func:`importlib.util.find_spec` and never imported (importing
``fanoutqa`` pulls heavy dependencies); their JSON files are read directly.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from uaclm_dist.data.records import DataError

__all__ = ["package_dir"]


def package_dir(name: str, pip_name: str) -> Path:
    """The folder of the installed package ``name``; a :class:`DataError` saying what to install
    (``pip_name``) when it is missing."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the {pip_name!r} package is not installed; it ships the {name} data "
                        f"(pip install {pip_name})")
    return Path(list(spec.submodule_search_locations)[0])
