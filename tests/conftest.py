"""Shared fixtures: the tiny test classifier and the shared data directory (``../shared`` beside the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = REPO_ROOT.parent / "shared"

# The tests run tiny tensors, where intra-op threads buy nothing, and OpenMP threads spin-waiting on a shared or
# oversubscribed CPU made the suite ~50x slower. Set OMP_NUM_THREADS to choose otherwise.
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` relative to the repo root; tests that need it skip when it is absent."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"shared data directory {SHARED_DIR} is absent (expected ../shared beside the repo)")
    return SHARED_DIR


@pytest.fixture(scope="session")
def imagenet_sample(shared_dir: Path) -> Path:
    """The 800-photo ImageNet sample, ``<wnid>_<name>.JPEG``."""
    path = shared_dir / "data" / "imagenet-sample"
    if not path.is_dir():
        pytest.skip(f"ImageNet sample {path} is absent")
    return path


@pytest.fixture(scope="session")
def tiny_classifier():
    """The registered ``tiny-test`` classifier: a small random CNN with 1000 outputs (fixed weights)."""
    from rde import create_classifier

    return create_classifier("tiny-test")


@pytest.fixture(scope="session")
def tiny_initializer_checkpoint(tmp_path_factory) -> Path:
    """A MaskNetModule training checkpoint for tiny-test + the tiny preset, trained for one step."""
    import lightning as L
    from torch.utils.data import DataLoader

    from amortized.module import MaskNetModule, NetConfig, ValidationConfig

    path = tmp_path_factory.mktemp("initializer") / "tiny.ckpt"
    model = MaskNetModule(classifier="tiny-test", preset="tiny", net=NetConfig(width=4, head_width=8),
                          validation=ValidationConfig(refine_steps=0))
    k = model.representation.layout.num_entries
    data = DataLoader([{"image": torch.rand(3, 64, 64), "mask": torch.rand(k), "target": torch.tensor(i),
                        "final_loss": torch.tensor(1.0)} for i in range(2)], batch_size=2)
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, data)
    trainer.save_checkpoint(path)
    return path
