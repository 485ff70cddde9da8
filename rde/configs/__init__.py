"""The YAML configs that ship inside the package, found by kind and name.

``presets/<name>.yaml`` are optimizer presets (:func:`rde.load_preset`); ``train/<name>.yaml`` are the
LightningCLI recipes of ``cartoonx train``. They are package data, read through ``importlib.resources``,
so a plain ``pip install`` finds them from any folder. The repository's top-level ``configs/presets`` and
``configs/train`` are symlinks to these folders: one copy of each file.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path

from rde.errors import InputError

KINDS = ("presets", "train")


def _folder(kind: str) -> Path:
    if kind not in KINDS:
        raise InputError(f"unknown config kind {kind!r}; choose one of {', '.join(KINDS)}")
    return Path(str(resources.files(__name__).joinpath(kind)))


def list_configs(kind: str) -> list[str]:
    """Names of the packaged configs of ``kind`` (``presets`` or ``train``), sorted."""
    return sorted(p.stem for p in _folder(kind).glob("*.yaml"))


def config_path(kind: str, name: str) -> Path:
    """The file of the packaged config ``name`` of ``kind``.

    Raises:
        ValueError: no such config; the message lists the available names and close matches.
    """
    path = _folder(kind) / f"{name}.yaml"
    if not path.is_file():
        available = list_configs(kind)
        close = difflib.get_close_matches(name, available, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        label = "preset" if kind == "presets" else "train config"
        raise InputError(f"unknown {label} {name!r}; available: {', '.join(available) or 'none'}.{hint}")
    return path
