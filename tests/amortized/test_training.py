"""The initializer's LightningModule: overfitting, risk aversion, the objective term, the probe cache, LightningCLI
on shards (resume, config round trip), plain checkpoints, fine-tuning, `cartoonx train` with the shipped config (wandb offline)."""

from __future__ import annotations

import math
import socket
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from torch.utils.data import DataLoader

from amortized.checkpoint import CHECKPOINT_KEY, read_initializer
from amortized.cli import main as cli_main_cartoonx
from amortized.losses import risk_averse_mask_loss
from amortized.module import LossConfig, MaskInitializer, NetConfig, ValidationConfig
from amortized.training import cli_main
from rde import WaveletRepresentation
from tests.amortized.fake_shards import keys_of, write_fake_shards

NO_VALIDATION = ValidationConfig(refine_steps=0)


def _model(net: dict | None = None, loss: dict | None = None, **kw) -> MaskInitializer:
    return MaskInitializer(classifier="tiny-test", preset="tiny", net=NetConfig(**{"width": 4, "head_width": 8, **(net or {})}),
                           loss=LossConfig(**(loss or {})), validation=NO_VALIDATION, **kw)


def _synthetic(n: int, seed: int = 0) -> list[dict]:
    """Images with learnable targets: 1 where the greyscale wavelet coefficient is above its scale's median."""
    g = torch.Generator().manual_seed(seed)
    rep = WaveletRepresentation(64, 64)
    out = []
    for i in range(n):
        image = torch.rand(3, 64, 64, generator=g)
        coeffs = rep.encode(image.mean(0, keepdim=True)[None]).abs()[0, 0]
        parts = [(p > p.median()).float() for p in rep.layout.split(coeffs)]
        out.append({"image": image, "mask": rep.layout.join(parts), "target": torch.tensor(i % 7),
                    "final_loss": torch.tensor(1.0), "key": f"img{seed}-{i}"})
    return out


def _collate(rows: list[dict]) -> dict:
    batch = {k: torch.stack([r[k] for r in rows]) for k in ("image", "mask", "target", "final_loss")}
    batch["key"] = [r["key"] for r in rows]
    return batch


def _trainer(tmp_path: Path, **kw) -> L.Trainer:
    defaults = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path)
    return L.Trainer(**{**defaults, **kw})


def test_overfits_a_handful_of_targets(tmp_path):
    torch.manual_seed(0)
    model = _model(net={"floor": 0.0}, loss={"under_weight": 1.0}, lr=1e-2)
    data = DataLoader(_synthetic(4), batch_size=4, collate_fn=_collate)
    batch = next(iter(data))
    layout = model.representation.layout

    def loss() -> float:
        with torch.no_grad():
            return risk_averse_mask_loss(model.eval()(batch["image"], batch["target"]), batch["mask"], layout, 1.0)[0].item()

    before = loss()
    _trainer(tmp_path, max_steps=150, limit_val_batches=0).fit(model, data)
    after = loss()
    assert after < before / 3, (before, after)


def test_risk_averse_loss_pushes_predictions_up(tmp_path):
    """With under_weight >> 1 the model trained on noisy 0/1 targets predicts higher than with plain MSE."""
    means = {}
    for w in (1.0, 16.0):
        torch.manual_seed(0)
        model = _model(net={"floor": 0.0}, loss={"under_weight": w}, lr=1e-2)
        data = DataLoader(_synthetic(4), batch_size=4, collate_fn=_collate)
        _trainer(tmp_path, max_steps=60, limit_val_batches=0).fit(model, data)
        batch = next(iter(data))
        with torch.no_grad():
            means[w] = model(batch["image"], batch["target"]).mean().item()
    assert means[16.0] > means[1.0] + 0.1, means


def test_probe_cache_gives_the_same_training(tmp_path):
    """The cached probe (features in float16) trains like the fresh one, and fills once per image."""
    results = {}
    for cache in (False, True):
        torch.manual_seed(0)
        model = _model(lr=1e-2, cache_probes=cache)
        _trainer(tmp_path, max_epochs=3, limit_val_batches=0).fit(model, DataLoader(_synthetic(4), batch_size=2,
                                                                                     collate_fn=_collate))
        results[cache] = [p.detach().clone() for p in model.net.parameters()]
        assert len(model._probes) == (4 if cache else 0)
    for a, b in zip(results[False], results[True]):
        assert torch.allclose(a, b, atol=1e-3), (a - b).abs().max()


def _tiny_config(tmp_path: Path, **model) -> Path:
    write_fake_shards(tmp_path / "shards", keys_of(24), 8)
    cfg = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu", "max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1,
            "num_sanity_val_steps": 0, "enable_progress_bar": False, "default_root_dir": str(tmp_path / "run"),
            "logger": [{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(tmp_path / "run")}}],
            "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                           "init_args": {"dirpath": str(tmp_path / "ckpt"), "save_last": True}}],
        },
        "model": {"classifier": "tiny-test", "preset": "tiny", "net": {"width": 4, "head_width": 8},
                  "loss": {"objective_weight": 1.0}, "validation": {"refine_steps": 2, "refine_images": 2}, **model},
        "data": {"class_path": "amortized.datamodule.MaskShardDataModule",
                 "init_args": {"shards": str(tmp_path / "shards"), "batch_size": 2, "val_fraction": 0.25}},
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_training_on_shards_with_the_objective_and_resume(tmp_path):
    config = _tiny_config(tmp_path)
    cli = cli_main(["fit", "--config", str(config)])
    assert cli.trainer.global_step == 2
    metrics = cli.trainer.callback_metrics
    for name in ("train/supervised", "train/objective", "train/barrier", "val/rde_loss_learned", "val/kept_logprob",
                 "val/refine2_over_target", "val/refine2_collapsed"):
        assert name in metrics, name
    last = tmp_path / "ckpt" / "last.ckpt"
    payload = read_initializer(last)  # plain data inside the Lightning checkpoint, read with weights_only=True
    assert payload["classifier"] == "tiny-test" and payload["layout"] == "wavelet:db3:J5:zero:64x64"
    assert payload["net"]["feature_channels"] == {"s2": 8, "s4": 16}
    ckpt = torch.load(last, weights_only=True)
    assert CHECKPOINT_KEY in ckpt and not any("classifier" in k for k in ckpt["state_dict"]), "the frozen classifier is never saved"

    resumed = cli_main(["fit", "--config", str(config), "--trainer.max_epochs", "2", "--ckpt_path", str(last)])
    assert resumed.trainer.current_epoch == 2
    assert resumed.trainer.global_step == 4


def test_config_round_trip(tmp_path):
    config = _tiny_config(tmp_path, lr=0.005, loss={"under_weight": 3.0})
    first = cli_main(["fit", "--config", str(config), "--trainer.max_epochs", "0"])
    saved = Path(first.trainer.log_dir) / "config.yaml"
    assert saved.exists()
    second = cli_main(["fit", "--config", str(saved), "--trainer.max_epochs", "0"])
    assert dict(first.model.hparams) == dict(second.model.hparams)
    assert second.model.hparams.lr == 0.005 and second.model.hparams.loss["under_weight"] == 3.0
    assert second.datamodule.hparams.preset == "tiny"  # linked from the model


def _forbid_network(monkeypatch) -> list:
    """Fail every socket connection of this process to a host that is not this machine; returns the attempts."""
    attempts = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def local_only(real):
        def connect(self, address):
            if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1", "localhost"):
                attempts.append(address)
                raise OSError(f"test forbids network access to {address}")
            return real(self, address)
        return connect

    monkeypatch.setattr(socket.socket, "connect", local_only(real_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", local_only(real_connect_ex))
    return attempts


@pytest.mark.slow
def test_cartoonx_train_with_the_shipped_cpu_config_logs_offline(shared_dir, tmp_path, monkeypatch):
    """``cartoonx train --config cpu`` (the packaged recipe: CSV + wandb loggers) for one step on the shared
    targets, from a fresh folder: no network attempt, an offline wandb run and a CSV metrics file under
    ./runs/initializer, and a checkpoint that loads as an initializer. (The shipped configs' parsing,
    ``shards`` included, is test_shipped_training_configs_parse.)"""
    pytest.importorskip("wandb")
    shards = shared_dir / "targets" / "efficientnet_lite0-cpu"
    if not (shards / "manifest.json").exists():
        pytest.skip(f"shared targets {shards} are absent")
    for name in ("WANDB_MODE", "WANDB_DIR", "WANDB_API_KEY", "OMP_WAIT_POLICY"):  # as a user's shell has them
        monkeypatch.setenv(name, "")  # recorded, so that whatever `cartoonx train` sets is undone afterwards
        monkeypatch.delenv(name)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))  # nothing written to ~/.config
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    attempts = _forbid_network(monkeypatch)
    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)
    code = cli_main_cartoonx(["train", "--config", "cpu", "--data.init_args.shards", str(shards),
                              "--data.init_args.batch_size", "2", "--trainer.max_steps", "1",
                              "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "0",
                              "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false"])
    assert code == 0
    assert attempts == []
    root = work / "runs" / "initializer"
    (run,) = (root / "wandb").glob("offline-run-*")  # the config's WandbLogger, offline
    (data,) = run.glob("run-*.wandb")
    assert data.stat().st_size > 0
    for log in run.rglob("*.log"):  # the wandb service runs in its own process: its logs name no server either
        assert "api.wandb.ai" not in log.read_text(errors="replace"), log
    (metrics,) = (root / "csv").glob("version_*/metrics.csv")  # the config's CSVLogger
    rows = metrics.read_text().splitlines()
    header = rows[0].split(",")
    assert "train/supervised" in header and len(rows) == 2
    loss = float(rows[1].split(",")[header.index("train/loss")])
    assert math.isfinite(loss) and loss > 0
    (last,) = root.rglob("last.ckpt")
    payload = read_initializer(last)
    assert payload["classifier"] == "efficientnet_lite0" and payload["preset"]["name"] == "cpu"
    assert payload["layout"] == "wavelet:db3:J5:zero:128x128"
    assert payload["net"]["width"] == 24 and payload["net"]["head_width"] == 32  # the shipped recipe's network
    assert payload["training"]["loss"]["under_weight"] == 4.0


def test_init_weights_fine_tunes_from_another_checkpoint(tmp_path):
    source = _model()
    with torch.no_grad():
        for p in source.net.parameters():
            p.add_(torch.randn_like(p))
    trainer = _trainer(tmp_path, max_steps=0, limit_val_batches=0)
    trainer.fit(source, DataLoader(_synthetic(2), batch_size=2, collate_fn=_collate))
    path = tmp_path / "source.ckpt"
    trainer.save_checkpoint(path)
    model = _model(lr=0.0, weight_decay=0.0, init_weights=str(path))
    _trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(model, DataLoader(_synthetic(2), batch_size=2, collate_fn=_collate))
    for (name, a), b in zip(source.net.named_parameters(), model.net.parameters()):
        assert torch.equal(a, b), name  # lr 0: exactly the loaded weights

    other = _model(net={"width": 8})
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
