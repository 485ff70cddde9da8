"""The initializer checkpoint format: plain data that loads with ``torch.load(weights_only=True)``.

A shipped initializer is one dict (:data:`FORMAT`, version :data:`FORMAT_VERSION`): the classifier's
name, the full preset it was trained for (not only its name, so it loads where that preset is unknown),
the mask layout's signature, the feature taps, the network's plain configuration and state dict, the
start's policy (:class:`amortized.policy.StartPolicy`: the warm-up and the guard, stored as ``warmup`` and
``guard``), and the training hyper-parameters and versions for the record.
Version 3 added the warm-up (:class:`rde.warmup.Warmup`), version 4 its pruning phase and the guard's shrinks,
version 5 an optional second stage (``refiner``: :func:`refiner_entry`, ``None`` for none); an older file reads as
one without them.
Nothing in it needs Lightning, LightningCLI or jsonargparse to read. Lightning training checkpoints carry the same dict
under :data:`CHECKPOINT_KEY`; :func:`export_checkpoint` extracts it.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

import rde
from rde import RDEConfig
from rde.errors import InputError
from rde.layout import MaskLayout
from amortized.policy import StartPolicy

CHECKPOINT_KEY = "fastcartoonx"
FORMAT = "fastcartoonx-initializer"
FORMAT_VERSION = 5
READABLE_VERSIONS = (2, 3, 4, 5)  # 2: no warm-up settings, which means none; 3: no pruning and no shrinks; 4: no refiner


class CheckpointMismatchError(InputError):
    """A checkpoint trained for another classifier, preset or mask layout, or not an initializer at all."""


def initializer_payload(
    classifier: str,
    preset: RDEConfig,
    taps: dict[str, str],
    net_config: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    training: dict[str, Any] | None = None,
    policy: StartPolicy | None = None,
    refiner: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint dict of a trained network; ``policy``: the start it ships with (default: the shipped one);
    ``refiner``: its second stage (:func:`refiner_entry`), default none."""
    size = preset.image_size
    policy = (policy or StartPolicy()).to_dict()
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "classifier": classifier,
        "preset": preset.to_dict(),
        "layout": MaskLayout.for_wavelet(size, size, preset.wavelet).signature,
        "taps": dict(taps),
        "net": _plain(net_config),
        "state_dict": {k: v.detach().cpu().clone() for k, v in state_dict.items()},
        "guard": _plain(policy["guard"]),
        "warmup": _plain(policy["warmup"]),
        "training": _plain(training or {}),
        "refiner": refiner,
        "versions": {"fastcartoonx": str(rde.__version__), "torch": str(torch.__version__)},
    }


def read_initializer(path: str | Path) -> dict[str, Any]:
    """The initializer payload of ``path``: an exported file, or a Lightning checkpoint written by training.

    An older file is returned in the current format, with what its version lacked switched off: a version-2
    file has no warm-up, a version-3 file no pruning phase and no guard shrinks.

    Raises:
        FileNotFoundError: no such file.
        CheckpointMismatchError: not an initializer checkpoint, or one of an older format.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"initializer checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's message advises weights_only=False: never for a file we don't trust
        raise CheckpointMismatchError(
            f"{path}: not a plain-data initializer checkpoint (it holds objects that would run code when loaded, "
            "which is refused); export one with `cartoonx export`") from None
    except Exception as e:  # noqa: BLE001 - an unreadable or foreign file
        raise CheckpointMismatchError(f"{path}: not a readable initializer checkpoint ({str(e).splitlines()[0]})") from None
    if isinstance(ckpt, dict) and CHECKPOINT_KEY in ckpt:
        ckpt = ckpt[CHECKPOINT_KEY]
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointMismatchError(f"{path}: not a FastCartoonX initializer checkpoint")
    if ckpt.get("format_version") not in READABLE_VERSIONS:
        raise CheckpointMismatchError(
            f"{path}: initializer format version {ckpt.get('format_version')}, this FastCartoonX reads version "
            f"{FORMAT_VERSION}; retrain it with `cartoonx train`"
        )
    version = ckpt["format_version"]
    if version < 4:  # read as the current format, with what the old one lacked switched off
        warmup = {"steps": 0} if version == 2 else ckpt["warmup"]
        ckpt = {**ckpt, "warmup": {**warmup, "prune_steps": 0}, "guard": {**ckpt.get("guard", {}), "shrinks": []}}
    return {"refiner": None, **ckpt, "format_version": FORMAT_VERSION}


def refiner_entry(config: dict[str, Any], state_dict: dict[str, torch.Tensor], mode: str = "select",
                  samples: int = 16, training: dict[str, Any] | None = None) -> dict[str, Any]:
    """A checkpoint's ``refiner`` entry: the second stage's network (:class:`amortized.refiner.Refiner`'s
    ``config`` and state dict), how a start uses it (``mode``, one of :data:`amortized.refiner.SELECT_MODES`) and
    the noisy copies of its objective check (``samples``)."""
    return {"config": _plain(config), "state_dict": {k: v.detach().cpu().clone() for k, v in state_dict.items()},
            "mode": str(mode), "samples": int(samples), "training": _plain(training or {})}


def check_compatible(payload: dict[str, Any], classifier: str, preset: RDEConfig, source: str = "checkpoint") -> None:
    """Refuse a checkpoint whose classifier, layout or objective differs from the requested ones."""
    problems = []
    if payload.get("classifier") != classifier:
        problems.append(f"classifier {payload.get('classifier')!r} (requested {classifier!r})")
    trained = RDEConfig.from_dict({k: v for k, v in payload["preset"].items() if k != "name"})
    for key in ("image_size", "wavelet", "lam", "distortion", "obfuscation", "spatial_weight"):
        if getattr(trained, key) != getattr(preset, key):
            problems.append(f"{key} {getattr(trained, key)!r} (requested {getattr(preset, key)!r})")
    if problems:
        raise CheckpointMismatchError(
            f"{source} was trained for a different setting: " + "; ".join(problems) + ". Use a matching "
            "--model/--preset or train an initializer for this one with `cartoonx train`."
        )


def export_checkpoint(
    source: str | Path,
    destination: str | Path,
    policy: StartPolicy | None = None,
    refiner: dict[str, Any] | None = None,
) -> Path:
    """Write the plain initializer payload of a training checkpoint or an exported file (no optimizer or loop
    state): what an initializer needs to ship. It keeps the start policy and the refiner the checkpoint records
    unless ``policy`` or ``refiner`` (a :func:`refiner_entry`) replaces them. The result is in the current format
    (:data:`FORMAT_VERSION`), as everything :func:`read_initializer` returns."""
    payload = read_initializer(source)
    if policy is not None:
        payload.update(_plain(policy.to_dict()))
    if refiner is not None:
        payload["refiner"] = refiner
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, destination)
    return destination


def _plain(value: Any) -> Any:
    """Dicts, lists, strings, numbers, bools and None only (what ``weights_only=True`` loads)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool):
        return value
    for kind in (str, int, float):  # subclasses such as torch's TorchVersion are not plain
        if isinstance(value, kind):
            return kind(value)
    if hasattr(value, "to_dict"):
        return _plain(value.to_dict())
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        return _plain(asdict(value))
    return str(value)
