"""LightningCLI entry point for training the initializer (also usable from Python with ``args=[...]``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence
from unittest import mock

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningCLI

from amortized.callbacks import RefinementMetric
from amortized.module import MaskNetModule

# ValidationConfig's fields of older configs -> RefinementMetric's arguments (``refinement:`` in a config).
_LEGACY_REFINEMENT = {"refine_steps": "steps", "refine_images": "images", "refine_every_n_epochs": "every_n_epochs"}


class InitializerCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # The data's image size, layout and classifier follow the model's: one value each, linked once.
        parser.link_arguments("model.preset", "data.init_args.preset")
        parser.link_arguments("model.classifier", "data.init_args.classifier")
        # The refinement metric is always on, configured under ``refinement:`` (``steps: 0`` switches it off).
        parser.add_lightning_class_args(RefinementMetric, "refinement")

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        self._refuse_missing_shards(config)
        validation = config.get("model.validation")
        for old, new in _LEGACY_REFINEMENT.items():  # an older config set the refinement metric there
            if validation is not None and getattr(validation, old, None) is not None:
                config[f"refinement.{new}"] = getattr(validation, old)

    @staticmethod
    def _refuse_missing_shards(config) -> None:
        """Refuse a missing shard directory before loggers, folders or the model are set up."""
        shards = (config.get("data") or {}).get("init_args", {}).get("shards")
        for directory in [] if shards is None else [shards] if isinstance(shards, str) else shards:
            if not Path(directory).is_dir():
                raise FileNotFoundError(
                    f"{directory}: no shard directory there (a relative path is relative to the current folder, "
                    f"{Path.cwd()}); pass --data.init_args.shards DIR"
                )


def cli_main(args: Sequence[str] | None = None, run: bool = True) -> InitializerCLI:
    """Run (or, with ``run=False``, only parse) LightningCLI's ``fit`` on ``args`` (default: ``sys.argv``)."""
    # With explicit args, LightningCLI warns about any sys.argv[1:] (`cartoonx train ...`'s own, or pytest's):
    # they are not read, so hide them rather than print a warning on every `cartoonx train`.
    with mock.patch.object(sys, "argv", sys.argv[:1] if args is not None else sys.argv):
        return InitializerCLI(
            MaskNetModule,
            LightningDataModule,
            subclass_mode_data=True,
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            args=list(args) if args is not None else None,
            run=run,
        )
