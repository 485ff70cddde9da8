"""Optimizer settings (:class:`RDEConfig`) and the named presets that ship as YAML in ``rde/configs/presets``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rde.configs import config_path, list_configs
from rde.distortion import get_distortion
from rde.errors import InputError
from rde.obfuscation import OBFUSCATIONS
from rde.precision import DEFAULT_PRECISION, check_precision_name
from rde.wavelets import WaveletConfig


@dataclass(frozen=True)
class RDEConfig:
    """Everything that defines an RDE optimization except the image, the classifier and the init.

    Attributes:
        image_size: side of the square image the mask is optimized on (images are resized and center-cropped).
        num_samples: L, noise samples per step. Cost grows linearly.
        steps: N, Adam steps.
        lr: Adam learning rate.
        lam: sparsity weight lambda in ``distortion + lam * ||s||_1 / k``.
        distortion: one of ``label`` (paper), ``maximize-target``, ``l2``, ``kl``; ``<name>+barrier`` adds a
            log-probability barrier (what :class:`~rde.warmup.Warmup` optimizes).
        obfuscation: ``adaptive-gaussian`` (paper) or ``zero``.
        spatial_weight: weight of WaveletX's spatial l1 energy ``mean |IDWT(s * DWT(grey))|``; 0 disables it.
        wavelet: the DWT (CartoonX only).
        samples_per_call: most obfuscations per classifier call; ``None`` puts all B*L in one call.
            Smaller values save memory and give the same result.
        precision: ``32-true`` (default), ``bf16-mixed`` or ``16-mixed`` (Lightning's names): the classifier's
            forward and backward under autocast; mask, Adam state and losses stay float32 (see :mod:`rde.precision`).
    """

    image_size: int = 128
    num_samples: int = 16
    steps: int = 300
    lr: float = 1e-2
    lam: float = 20.0
    distortion: str = "label"
    obfuscation: str = "adaptive-gaussian"
    spatial_weight: float = 0.0
    wavelet: WaveletConfig = field(default_factory=WaveletConfig)
    samples_per_call: int | None = None
    precision: str = DEFAULT_PRECISION
    name: str = "custom"

    def __post_init__(self) -> None:
        if isinstance(self.wavelet, dict):
            object.__setattr__(self, "wavelet", WaveletConfig(**self.wavelet))
        for key in ("image_size", "num_samples", "steps"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if key == "steps" else 1):
                raise InputError(f"{key} must be a {'non-negative' if key == 'steps' else 'positive'} int, got {value!r}")
        for key in ("lr", "lam", "spatial_weight"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or value != value or value < 0 or value == float("inf"):
                raise InputError(f"{key} must be a finite non-negative number, got {value!r}")
        get_distortion(self.distortion)  # an unknown name is refused here, with the known ones
        if self.obfuscation not in OBFUSCATIONS:
            raise InputError(f"unknown obfuscation {self.obfuscation!r}; choose one of {', '.join(OBFUSCATIONS)}")
        if self.samples_per_call is not None and self.samples_per_call < 1:
            raise InputError(f"samples_per_call must be positive or None, got {self.samples_per_call!r}")
        check_precision_name(self.precision)

    def replace(self, **changes: Any) -> RDEConfig:
        """Copy with some fields changed; ``None`` values are ignored (convenient for CLI overrides)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if changes and "name" not in changes:
            changes["name"] = f"{self.name}+" if not self.name.endswith("+") else self.name
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], name: str = "custom") -> RDEConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise InputError(f"unknown preset keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{"name": name, **d})


def list_presets() -> list[str]:
    """Names of the presets that ship with the package."""
    return list_configs("presets")


def load_preset(name_or_path: str | Path | RDEConfig) -> RDEConfig:
    """A named preset (``cpu``, ``paper``, ``tiny``), a YAML file path, or an :class:`RDEConfig` as is."""
    if isinstance(name_or_path, RDEConfig):
        return name_or_path
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.exists():
            raise FileNotFoundError(f"preset file not found: {path}")
        name = path.stem
    else:
        name = str(name_or_path)
        path = config_path("presets", name)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise InputError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a preset must be a YAML mapping")
    return RDEConfig.from_dict(data, name=name)
