"""The initializer's LightningModule: overfitting, objective-only training, resume, config round trip, wandb offline."""

from __future__ import annotations

import socket
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from torch.utils.data import DataLoader

from amortized.losses import risk_averse_mask_loss
from amortized.module import CHECKPOINT_KEY, MaskInitializer
from amortized.training import cli_main
from rde import WaveletRepresentation

TINY_MODEL = {"classifier": "tiny-test", "preset": "tiny", "width": 4, "decoder_width": 8}


def _synthetic(n: int, k: int, seed: int = 0) -> list[dict]:
    """Images with learnable targets: 1 where the greyscale wavelet coefficient is above its scale's median."""
    g = torch.Generator().manual_seed(seed)
    rep = WaveletRepresentation(64, 64)
    out = []
    for _ in range(n):
        image = torch.rand(3, 64, 64, generator=g)
        coeffs = rep.encode(image.mean(0, keepdim=True)[None]).abs()[0, 0]
        parts = [(p > p.median()).float() for p in rep.layout.split(coeffs)]
        out.append({"image": image, "mask": rep.layout.join(parts), "final_loss": torch.tensor(1.0)})
    assert out[0]["mask"].shape == (k,)
    return out


def _trainer(tmp_path: Path, **kw) -> L.Trainer:
    defaults = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path)
    return L.Trainer(**{**defaults, **kw})


def test_overfits_a_handful_of_targets(tmp_path):
    torch.manual_seed(0)
    model = MaskInitializer(**TINY_MODEL, floor=0.0, init_bias=0.0, lr=1e-2, refine_steps=0, under_weight=1.0)
    k = model.net.layout(64, 64).num_entries
    data = DataLoader(_synthetic(4, k), batch_size=4)
    batch = next(iter(data))
    layout = model.net.layout(64, 64)

    def loss() -> float:
        with torch.no_grad():
            return risk_averse_mask_loss(model.net.eval()(batch["image"]), batch["mask"], layout, 1.0)[0].item()

    before = loss()
    _trainer(tmp_path, max_steps=150, limit_val_batches=0).fit(model, data)
    after = loss()
    assert after < before / 3, (before, after)


def test_risk_averse_loss_pushes_predictions_up(tmp_path):
    """With under_weight >> 1 the model trained on noisy 0/1 targets predicts higher than with plain MSE."""
    means = {}
    for w in (1.0, 16.0):
        torch.manual_seed(0)
        model = MaskInitializer(**TINY_MODEL, floor=0.0, init_bias=0.0, lr=1e-2, refine_steps=0, under_weight=w)
        k = model.net.layout(64, 64).num_entries
        data = DataLoader(_synthetic(4, k), batch_size=4)
        _trainer(tmp_path, max_steps=60, limit_val_batches=0).fit(model, data)
        with torch.no_grad():
            means[w] = model(next(iter(data))["image"]).mean().item()
    assert means[16.0] > means[1.0] + 0.1, means


def _tiny_config(tmp_path: Path, images: Path, **model) -> Path:
    cfg = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu", "max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1,
            "num_sanity_val_steps": 0, "enable_progress_bar": False, "default_root_dir": str(tmp_path / "run"),
            "logger": [{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(tmp_path / "run")}}],
            "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                           "init_args": {"dirpath": str(tmp_path / "ckpt"), "save_last": True}}],
        },
        "model": {**TINY_MODEL, "objective_weight": 1.0, "refine_steps": 2, "refine_images": 2, **model},
        "data": {"class_path": "amortized.image_datamodule.ImageDataModule",
                 "init_args": {"images": str(images), "batch_size": 2, "limit": 4}},
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_objective_only_training_without_shards_and_resume(tmp_path, imagenet_sample):
    config = _tiny_config(tmp_path, imagenet_sample, supervised_weight=0.0)
    cli = cli_main(["fit", "--config", str(config)])
    assert cli.trainer.global_step == 2
    metrics = cli.trainer.callback_metrics
    assert "train/objective" in metrics and "val/rde_loss_learned" in metrics and "val/refine2_ratio" in metrics and "val/refine2_collapsed" in metrics
    last = tmp_path / "ckpt" / "last.ckpt"
    ckpt = torch.load(last, weights_only=False)
    assert ckpt[CHECKPOINT_KEY]["classifier"] == "tiny-test"
    assert ckpt[CHECKPOINT_KEY]["layout"] == "wavelet:db3:J5:zero:64x64"
    assert not any("classifier" in k for k in ckpt["state_dict"]), "the frozen classifier must not be saved"

    resumed = cli_main(["fit", "--config", str(config), "--trainer.max_epochs", "2", "--ckpt_path", str(last)])
    assert resumed.trainer.current_epoch == 2
    assert resumed.trainer.global_step == 4


def test_config_round_trip(tmp_path, imagenet_sample):
    config = _tiny_config(tmp_path, imagenet_sample, lr=0.005, under_weight=3.0)
    first = cli_main(["fit", "--config", str(config), "--trainer.max_epochs", "0"])
    saved = Path(first.trainer.log_dir) / "config.yaml"
    assert saved.exists()
    second = cli_main(["fit", "--config", str(saved), "--trainer.max_epochs", "0"])
    assert dict(first.model.hparams) == dict(second.model.hparams)
    assert second.model.hparams.lr == 0.005 and second.model.hparams.under_weight == 3.0
    assert second.datamodule.hparams.preset == "tiny"  # linked from the model


def test_wandb_logger_is_offline_and_makes_no_network_call(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    attempts = []
    real_connect = socket.socket.connect

    def guarded(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0]
            if host not in ("127.0.0.1", "::1", "localhost"):
                attempts.append(address)
                raise OSError(f"test forbids network access to {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    model = MaskInitializer(**TINY_MODEL, refine_steps=0)
    k = model.net.layout(64, 64).num_entries
    logger = WandbLogger(project="fastcartoonx-test", save_dir=str(tmp_path), offline=True)
    trainer = _trainer(tmp_path, max_steps=2, limit_val_batches=0, logger=logger, log_every_n_steps=1)
    trainer.fit(model, DataLoader(_synthetic(2, k), batch_size=2))
    logger.experiment.finish()
    assert attempts == []
    assert list(tmp_path.rglob("offline-run-*")), "wandb did not write an offline run"


def test_init_weights_fine_tunes_from_another_checkpoint(tmp_path):
    source = MaskInitializer(**TINY_MODEL, refine_steps=0)
    with torch.no_grad():
        for p in source.net.parameters():
            p.add_(torch.randn_like(p))
    path = tmp_path / "source.ckpt"
    torch.save({"state_dict": source.state_dict()}, path)
    model = MaskInitializer(**TINY_MODEL, refine_steps=0, lr=0.0, weight_decay=0.0, init_weights=str(path))
    k = model.net.layout(64, 64).num_entries
    _trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(model, DataLoader(_synthetic(2, k), batch_size=2))
    for (name, a), b in zip(source.net.named_parameters(), model.net.parameters()):
        assert torch.equal(a, b), name  # lr 0: exactly the loaded weights

    other = MaskInitializer(**{**TINY_MODEL, "width": 8}, refine_steps=0)
    with pytest.raises(ValueError, match="does not match"):
        other.load_net_weights(path)


@pytest.mark.parametrize("config", sorted((Path(__file__).parents[2] / "configs" / "train").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_training_configs_parse(config, capsys):
    """Every option in the shipped configs exists (a renamed argument would fail here, not in a user's run)."""
    with pytest.raises(SystemExit) as exit_:
        cli_main(["fit", "--config", str(config), "--print_config"])
    assert exit_.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["classifier"] == "efficientnet_lite0"
