"""The initializer's LightningModule: overfitting, risk aversion, the objective term, the probe cache, the refinement
metric callback, the learning-rate schedule, LightningCLI on shards (resume, config round trip, older configs and the
old class name), plain checkpoints, fine-tuning, `cartoonx train` with the shipped config (wandb offline)."""

from __future__ import annotations

import math
import socket
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from torch.utils.data import DataLoader

from amortized.callbacks import RefinementMetric
from amortized.checkpoint import CHECKPOINT_KEY, read_initializer
from amortized.cli import main as cli_main_cartoonx
from amortized.commands.train import config_files
from amortized.losses import objective_term, risk_averse_mask_loss, unrolled_refinement
from amortized.module import LossConfig, MaskInitializer, MaskNetModule, NetConfig, one_cycle_schedule
from amortized.training import cli_main
from rde import WaveletRepresentation
from rde.configs import list_configs
from rde.metrics import collapsed, loss_at
from rde.warmup import WarmStart, Warmup
from tests.amortized.fake_shards import keys_of, write_fake_shards


def _model(net: dict | None = None, loss: dict | None = None, **kw) -> MaskNetModule:
    return MaskNetModule(classifier="tiny-test", preset="tiny", net=NetConfig(**{"width": 4, "head_width": 8, **(net or {})}),
                         loss=LossConfig(**(loss or {})), **kw)


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
                  "loss": {"objective_weight": 1.0}, **model},
        "refinement": {"steps": 2, "images": 2},
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

    # Resumed with a longer budget (6 steps), the schedule is the 6-step one at step 4, not the 2-step one continued
    # (whose cosine would climb back to the full rate: 2e-3 at step 5).
    resumed = cli_main(["fit", "--config", str(config), "--trainer.max_epochs", "3", "--ckpt_path", str(last),
                        "--trainer.callbacks+=LearningRateMonitor", "--trainer.log_every_n_steps", "1"])
    assert resumed.trainer.current_epoch == 3
    assert resumed.trainer.global_step == 6
    rows = [r.split(",") for r in (Path(resumed.trainer.log_dir) / "metrics.csv").read_text().splitlines()]
    lrs = {int(r[rows[0].index("step")]): float(r[rows[0].index("lr-AdamW")]) for r in rows[1:] if r[rows[0].index("lr-AdamW")]}
    by_hand = {s: 2e-3 * 0.5 * (1 + math.cos(math.pi * (s - 1) / 5)) for s in (2, 3, 4, 5)}  # warm-up 1 step, cosine over 5
    assert lrs == pytest.approx(by_hand, rel=1e-6)


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


@pytest.mark.parametrize("name", list_configs("train"))
def test_shipped_training_configs_parse(name, capsys):
    """Every option in the shipped configs exists (a renamed argument would fail here, not in a user's run)."""
    with pytest.raises(SystemExit) as exit_:
        cli_main(["fit", *[arg for path in config_files(name) for arg in ("--config", path)], "--print_config"])
    assert exit_.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["classifier"] == "efficientnet_lite0"
    assert printed["data"]["init_args"]["batch_size"] == 16 and printed["refinement"]["steps"] == 30  # the cpu recipe's


def _printed(capsys, name: str) -> dict:
    with pytest.raises(SystemExit):
        cli_main(["fit", *[arg for path in config_files(name) for arg in ("--config", path)], "--print_config"])
    return yaml.safe_load(capsys.readouterr().out)


def test_explicit_args_print_no_warning_about_the_process_arguments(capsys, monkeypatch, recwarn):
    """`cartoonx train ...` hands its arguments over explicitly; LightningCLI used to warn on every run that
    sys.argv also held some."""
    monkeypatch.setattr(sys, "argv", ["cartoonx", "train", "--config", "cpu"])
    _printed(capsys, "cpu")
    assert not [w for w in recwarn if "args parameter" in str(w.message)]
    assert sys.argv == ["cartoonx", "train", "--config", "cpu"]


def test_the_shards_overlay_changes_only_the_run(capsys):
    """``--config shards`` is cpu.yaml, then shards.yaml: the cpu recipe with the run's length, devices and
    validation cadence of the former stand-alone shards.yaml."""
    assert [Path(p).name for p in config_files("shards")] == ["cpu.yaml", "shards.yaml"]
    assert [Path(p).name for p in config_files(str(Path(config_files("shards")[1])))] == ["cpu.yaml", "shards.yaml"]
    cpu, shards = _printed(capsys, "cpu"), _printed(capsys, "shards")
    changed = {"max_epochs": 30, "check_val_every_n_epoch": 5, "devices": "auto", "log_every_n_steps": 50,
               "num_sanity_val_steps": 2}
    assert {k: shards["trainer"][k] for k in changed} == changed
    assert shards["refinement"] == {**cpu["refinement"], "every_n_epochs": 6}
    for key in ("model", "data", "seed_everything"):
        assert shards[key] == cpu[key], key
    assert {k: v for k, v in shards["trainer"].items() if k not in changed} == \
        {k: v for k, v in cpu["trainer"].items() if k not in changed}


def _images_with_targets(n: int) -> list[dict]:
    return [{**row, "final_loss": torch.tensor(0.5 + 0.1 * i)} for i, row in enumerate(_synthetic(n, seed=3))]


def test_refinement_callback_is_the_former_metric(tmp_path):
    """The callback's numbers are those of the code it replaces (refine the prediction of the first images of the
    validation run, loss@steps / the target's final loss, median), its images collected across batches."""
    torch.manual_seed(0)
    model = _model()
    rows = _images_with_targets(4)
    callback = RefinementMetric(steps=3, images=3)
    trainer = _trainer(tmp_path, callbacks=[callback], inference_mode=False)  # as in fit: the probe needs gradients
    trainer.validate(model, DataLoader(rows, batch_size=2, collate_fn=_collate), verbose=False)
    logged = trainer.callback_metrics

    batch = _collate(rows[:3])  # the former on_validation_epoch_end, line by line
    with torch.no_grad():
        init = model(batch["image"])
    res = model.explainer().explain(batch["image"], init=init, steps=3, seed=1234)
    ratio = loss_at(res.history["loss"], [3])[3] / batch["final_loss"]
    assert logged["val/refine3_over_target"].item() == pytest.approx(ratio.median().item(), rel=1e-5)
    expected_collapsed = collapsed(res.history["distortion"], res.target_probs).float().mean().item()
    assert logged["val/refine3_collapsed"].item() == pytest.approx(expected_collapsed)

    every_other = RefinementMetric(steps=1, images=1, every_n_epochs=2)
    trainer = _trainer(tmp_path, callbacks=[every_other], inference_mode=False)
    runs = []
    for _ in range(3):
        trainer.validate(model, DataLoader(rows[:2], batch_size=2, collate_fn=_collate), verbose=False)
        runs.append("val/refine1_over_target" in trainer.callback_metrics)
    assert runs == [True, False, True]
    with pytest.raises(ValueError, match="every_n_epochs"):
        RefinementMetric(every_n_epochs=0)


def test_one_cycle_schedule_is_the_warm_up_and_cosine_formula():
    """lr(s) = lr * (1/25 + 24/25 * s / w) for s <= w = int(0.1 total), then lr * (1 + cos(pi (s - w) / (total - w))) / 2."""
    total, lr = 50, 2e-3
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    schedule = one_cycle_schedule(opt, total)
    warm = 5

    def by_hand(s: int) -> float:
        if s <= warm:
            return lr * (1 / 25 + (1 - 1 / 25) * s / warm)
        return lr * 0.5 * (1 + math.cos(math.pi * (s - warm) / (total - warm)))

    seen = []
    for step in range(total + 1):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    for step in (0, 1, 3, 5, 6, 20, 37, 49, 50):
        assert seen[step] == pytest.approx(by_hand(step), rel=1e-6, abs=1e-12), step
    assert schedule.state_dict()["total_steps"] == total


def test_configure_optimizers_steps_the_schedule_over_the_run(tmp_path):
    model = _model(lr=1e-2)
    lrs = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    _trainer(tmp_path, max_steps=20, limit_val_batches=0, callbacks=[Record()]).fit(
        model, DataLoader(_synthetic(2), batch_size=2, collate_fn=_collate))
    assert len(lrs) == 20
    assert lrs[0] == pytest.approx(1e-2 / 25) and lrs[2] == pytest.approx(1e-2)  # warm-up: 2 steps of 20
    assert lrs[11] == pytest.approx(1e-2 * 0.5 * (1 + math.cos(math.pi * 9 / 18)))


def test_the_old_class_name_and_an_older_config_still_load(tmp_path):
    """``MaskInitializer`` (saved configs and checkpoints name it) is the same class; a config of before, with the
    refinement metric's settings under model.validation, runs with them; a training checkpoint loads back."""
    assert MaskInitializer is MaskNetModule
    config = _tiny_config(tmp_path)
    old = yaml.safe_load(config.read_text())
    del old["refinement"]
    old["model"]["validation"] = {"samples": 2, "refine_steps": 4, "refine_images": 1, "refine_every_n_epochs": 3}
    config.write_text(yaml.safe_dump(old))
    cli = cli_main(["fit", "--config", str(config), "--trainer.max_epochs", "0"])
    (callback,) = [c for c in cli.trainer.callbacks if isinstance(c, RefinementMetric)]
    assert (callback.steps, callback.images, callback.every_n_epochs) == (4, 1, 3)
    assert cli.model.validation_config.samples == 2

    cli.trainer.save_checkpoint(tmp_path / "model.ckpt")
    loaded = MaskInitializer.load_from_checkpoint(tmp_path / "model.ckpt", weights_only=False)
    assert isinstance(loaded, MaskNetModule) and loaded.hparams.validation["refine_steps"] == 4
    for a, b in zip(cli.model.net.parameters(), loaded.net.parameters()):
        assert torch.equal(a, b)


# -- the loss on the refined result (unrolled warm-up steps) ---------------------------------------------------------
def _refined_objective(model: MaskNetModule, batch: dict, steps: int = 2) -> float:
    """The objective (preset λ, barrier) of the prediction after ``steps`` warm-up steps, at fixed noise."""
    with torch.no_grad():
        pred = model(batch["image"], batch["target"])
    refined = unrolled_refinement(model.explainer(), batch["image"], pred, batch["target"], steps, 0.03, 2, seed=99)
    with torch.no_grad():
        term, _ = objective_term(model.explainer(), batch["image"], refined, batch["target"], 4, [7, 8], 1.0)
    return term.mean().item()


def test_zero_unroll_steps_is_exactly_the_former_loss():
    """K = 0 adds nothing: the loss is the supervised term plus the objective term at the prediction, computed here
    as the module computed it before (its own seeds), whatever the unroll weight."""
    torch.manual_seed(0)
    model = _model(loss={"objective_weight": 0.5, "unroll_steps": 0, "unroll_weight": 3.0})
    batch = _collate(_synthetic(2))
    total, pred = model.model_step(batch, "train")
    sup, _ = risk_averse_mask_loss(pred, batch["mask"], model.representation.layout, 4.0)
    obj = model.explainer(20.0).objective(batch["image"], pred, target=batch["target"], num_samples=4, seed=[0, 1])
    former = sup + 0.5 * (obj["loss"] + torch.relu(-obj["target_logprob"])).mean()
    assert torch.equal(total, former)
    with pytest.raises(ValueError, match="unroll_steps"):
        LossConfig(unroll_steps=-1)


def test_unrolled_loss_sends_the_refined_gradient_to_the_network():
    """Through K warm-up steps the gradient reaches the network's heads (with only the unrolled term it is zero at
    K = 0), and it is the first-order one: the objective's gradient at the refined mask, zero where it is clamped."""
    torch.manual_seed(0)
    batch = _collate(_synthetic(2))
    grads = {}
    for steps in (0, 3):
        model = _model(loss={"supervised_weight": 0.0, "unroll_steps": steps})
        model.model_step(batch, "train")[0].backward()
        grads[steps] = sum(p.grad.abs().sum().item() for p in model.net.heads.parameters() if p.grad is not None)
    assert grads[0] == 0.0 and grads[3] > 0.0

    explainer, images, targets = model.explainer(), batch["image"], batch["target"]
    with torch.no_grad():
        start = model(images, targets)
    start[:, ::2] = 0.0  # half the coefficients at the lower bound, where the sparsity term holds them
    leaf = start.clone().requires_grad_(True)
    refined = unrolled_refinement(explainer, images, leaf, targets, 3, 0.03, 2, seed=5)
    (grad,) = torch.autograd.grad(objective_term(explainer, images, refined, targets, 4, [1, 2], 1.0)[0].sum(), leaf)

    reference = WarmStart(explainer, Warmup(steps=3, num_samples=2, lr=0.03, prune_steps=0), seed=5).warm(
        images, start, targets).mask.requires_grad_(True)
    assert torch.equal(refined.detach(), reference.detach())
    (at_refined,) = torch.autograd.grad(objective_term(explainer, images, reference, targets, 4, [1, 2], 1.0)[0].sum(),
                                        reference)
    inside = (reference > 0) & (reference < 1)
    assert 0 < inside.float().mean() < 1
    assert torch.allclose(grad, at_refined * inside, atol=1e-7)


def test_training_through_unrolled_steps_lowers_the_refined_loss(tmp_path):
    torch.manual_seed(0)
    model = _model(loss={"supervised_weight": 0.1, "unroll_steps": 2}, lr=1e-2, weight_decay=0.0)
    data = DataLoader(_synthetic(2), batch_size=2, collate_fn=_collate)
    batch = next(iter(data))
    before = _refined_objective(model.eval(), batch)
    _trainer(tmp_path, max_steps=25, limit_val_batches=0).fit(model, data)
    after = _refined_objective(model.eval(), batch)
    assert after < 0.8 * before, (before, after)
