"""LightningCLI entry point for training the initializer (also usable from Python with ``args=[...]``)."""

from __future__ import annotations

from typing import Sequence

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningCLI

from amortized.module import MaskInitializer


class InitializerCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # The data's image size, layout and classifier follow the model's: one value each, linked once.
        parser.link_arguments("model.preset", "data.init_args.preset")
        parser.link_arguments("model.classifier", "data.init_args.classifier")


def cli_main(args: Sequence[str] | None = None, run: bool = True) -> InitializerCLI:
    return InitializerCLI(
        MaskInitializer,
        LightningDataModule,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        args=list(args) if args is not None else None,
        run=run,
    )
