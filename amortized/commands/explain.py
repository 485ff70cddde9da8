"""Explain images with CartoonX (or Pixel RDE) and write one figure, mask and metadata file per image.

Each IMAGE is an image file, a folder (its image files, recursively, in sorted order) or a list file
(.txt or .lst: one image path per line). For an image ``<stem>.<ext>`` the command writes
``OUT/<stem>.png`` (input, explanation, loss curves), ``OUT/<stem>.npz`` (mask, explanation image, loss
history) and ``OUT/<stem>.json`` (class, probability, mask layout, loss history, full configuration), and
prints one summary line. Inputs that cannot be read as images are named on stderr and skipped; after the
others are done the exit code is then 1. Outputs of an earlier run are replaced only with --overwrite.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from rde.init import InitSpec
    from rde.layout import MaskLayout

from amortized.commands._args import add_explainer_arguments, add_rerun_arguments, int_at_least, kept_images, outside, steps_int

METHODS = ("cartoonx", "pixel-rde")
LEARNED_STEPS_FRACTION = 1 / 3  # default refinement after a learned init, relative to the preset's steps
InitFn = Callable[["Tensor"], "InitSpec"]
OUTPUT_SUFFIXES = (".png", ".npz", ".json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "images", nargs="+", metavar="IMAGE",
        help="image files, folders (searched recursively) or list files (.txt/.lst, one image path per line)",
    )
    add_explainer_arguments(parser, seed_help="noise seed, the same for every image")
    parser.add_argument("--steps", type=steps_int, help="Adam steps (default: the preset's)")
    parser.add_argument(
        "--init",
        default="ones",
        help="initial mask: ones, const:C, random, preopt, learned (the amortized initializer; default steps: "
        "a third of the preset's), or a PATH.npz written by this command; append +warmup (e.g. ones+warmup) for a "
        "cheap warm-up run first (rde.warmup.Warmup's settings); the learned start runs its checkpoint's policy "
        "(default: %(default)s)",
    )
    parser.add_argument("--num-samples", type=int_at_least(1), help="noise samples L per step (default: the preset's)")
    add_rerun_arguments(parser, "explanations",
                        "keep the images an earlier run with the same settings finished in OUT and explain the rest")
    parser.add_argument(
        "--batch-size",
        type=int_at_least(1),
        default=1,
        help="images optimized together; pays off on a GPU, not on a CPU (default: %(default)s)",
    )
    parser.add_argument("--method", choices=METHODS, default="cartoonx", help="default: %(default)s")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available, else cpu; ``cuda`` without a GPU is an error."""
    import torch

    from rde.errors import InputError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: CUDA is not available on this machine (use --device cpu or auto)")
    return torch.device(name)


def resolve_init(spec: str, layout: MaskLayout, args: argparse.Namespace, explainer: Any = None) -> InitFn:
    """Turn ``--init`` into a function from a batch of images ``(B, 3, H, W)`` to an ``init`` for ``explain``.

    Named inits (``ones``, ``const:C``, ``random``, ``preopt``) pass through; ``PATH.npz`` loads a mask
    saved by this command (its layout must equal ``layout``); ``learned`` predicts the mask with the
    initializer in ``args.checkpoint`` (default: the one bundled for the explainer's classifier and preset),
    guarded; ``<init>+warmup`` follows any of them with a :class:`~rde.warmup.WarmStart`. ``learned`` and
    ``+warmup`` need ``explainer``. Raises :class:`~rde.errors.InputError` for anything else.
    """
    from rde.errors import InputError
    from rde.init import parse_init
    from rde.warmup import WarmStart, split_warmup

    base, warm = split_warmup(spec)
    if warm:
        if explainer is None:
            raise InputError(f"--init {spec} needs the explainer whose optimizer runs the warm-up")
        return WarmStart(explainer, base=resolve_init(base, layout, args, explainer), seed=args.seed)
    if spec == "learned":
        from amortized.initializer import LearnedStart

        if explainer is None:
            raise InputError("--init learned needs the explainer whose classifier feeds the initializer")
        return LearnedStart.for_explainer(explainer, getattr(args, "checkpoint", None), seed=args.seed)
    if getattr(args, "checkpoint", None) is not None:
        raise InputError("--checkpoint is only used with --init learned")
    refuse_checkpoint_as_init(spec, "--init")
    if spec.endswith(".npz"):
        mask = _load_init_mask(Path(spec), layout)
        return lambda images: mask.to(images.device).unsqueeze(0).expand(images.shape[0], -1)
    parse_init(spec)
    return lambda images: spec


CHECKPOINT_SUFFIXES = (".pt", ".ckpt", ".pth")


def refuse_checkpoint_as_init(spec: str, option: str) -> None:
    """An initializer checkpoint given as the init itself: say how it is used (``--init learned --checkpoint``)."""
    from rde.errors import InputError

    if spec.lower().endswith(CHECKPOINT_SUFFIXES):
        raise InputError(f"{option} {spec}: an initializer checkpoint is used with --init learned --checkpoint {spec}"
                         + (" (compare: --inits ones,learned --checkpoint PATH)" if option == "--inits" else ""))


def interrupted_hint(args: argparse.Namespace) -> str:
    """After Ctrl-C: what was kept and how to go on (printed by the CLI)."""
    return f"finished images are kept in {args.out}; rerun the same command with --resume to explain the rest"


def _load_init_mask(path: Path, layout: MaskLayout) -> Tensor:
    from rde.errors import InputError
    from rde.explanation import Explanation

    if not path.is_file():
        raise FileNotFoundError(f"--init {path}: no such file")
    try:
        saved_layout, mask, _ = Explanation.load_mask(path)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"--init {path}: needs the {path.with_suffix('.json').name} written beside it ({e})")
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise InputError(f"--init {path}: not a mask written by 'cartoonx explain' ({e})") from None
    if saved_layout.signature != layout.signature:
        raise InputError(
            f"--init {path}: its mask layout is {saved_layout.signature}, but this run uses {layout.signature}"
        )
    return mask.float()


def output_stems(paths: list[Path]) -> list[str]:
    """The output name of each input: its stem, with ``-2``, ``-3``... for repeated stems, in input order."""
    used: set[str] = set()
    stems = []
    for path in paths:
        stem, n = path.stem, 1
        while stem in used:
            n += 1
            stem = f"{path.stem}-{n}"
        used.add(stem)
        stems.append(stem)
    return stems


def check_no_earlier_outputs(out: Path, stems: list[str]) -> None:
    """Refuse to replace the figure, mask or metadata that an earlier run wrote for any of ``stems``."""
    from rde.io import OutputDirError

    taken = [s for s in stems if any((out / f"{s}{ext}").exists() for ext in OUTPUT_SUFFIXES)]
    if taken:
        shown = ", ".join(taken[:3]) + (f" and {len(taken) - 3} more" if len(taken) > 3 else "")
        raise OutputDirError(
            f"--out {out}: holds outputs of an earlier run for {shown}; pass --overwrite to replace them, "
            "or choose another --out"
        )


def run_settings(args: argparse.Namespace, config: Any) -> dict[str, Any]:
    """What decides an explanation besides the image: compared with an earlier run's on --resume."""
    preset = {k: v for k, v in config.to_dict().items() if k != "name"}
    settings = {"method": args.method, "model": args.model, "preset": preset, "init": args.init, "seed": args.seed}
    return json.loads(json.dumps(settings))  # as it reads back from a .json (tuples become lists)


def finished_stems(out: Path, stems: list[str], settings: dict[str, Any]) -> set[str]:
    """The stems an earlier run finished in ``out`` (its ``.json``, written last, is complete); refuses an
    earlier run made with other settings rather than mixing two runs in one folder."""
    from rde.errors import InputError

    done = set()
    for stem in stems:
        try:
            meta = json.loads((out / f"{stem}.json").read_text())
        except (OSError, ValueError):
            continue  # not there, or cut off: explained again
        if "seconds" not in meta:
            continue  # interrupted between its files
        config = meta.get("config", {})
        saved = {"method": config.get("method"), "model": config.get("model"),
                 "preset": {k: v for k, v in config.get("preset", {}).items() if k != "name"},
                 "init": config.get("init"), "seed": config.get("seed")}
        if saved != settings:
            diff = ", ".join(k for k in settings if saved.get(k) != settings[k])
            raise InputError(f"--out {out}: {stem}.json was made with other settings ({diff}); "
                             "use --overwrite or another --out")
        done.add(stem)
    return done


def run(args: argparse.Namespace) -> int:
    # As in `cartoonx generate`: spin-waiting OpenMP threads make a shared, busy CPU many times slower.
    # This only takes effect when torch is not imported yet (the console script).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import rde
    from amortized.datasets import find_images
    from rde.errors import InputError
    from rde.io import check_output_dir, remove_if_empty, write_failure
    from rde.representation import create_representation

    device = resolve_device(args.device)
    preset = rde.load_preset(args.preset)
    steps = args.steps
    from rde.warmup import split_warmup

    base_init, warm = split_warmup(args.init)
    needs_explainer = warm or base_init == "learned"
    if steps is None and base_init == "learned":
        steps = max(1, round(preset.steps * LEARNED_STEPS_FRACTION))
    config = preset.replace(steps=steps, lam=args.lam, num_samples=args.num_samples, precision=args.precision)
    method_cls = rde.CartoonX if args.method == "cartoonx" else rde.PixelRDE
    size = config.image_size
    layout = create_representation(method_cls.representation_kind, size, size, config.wavelet).layout
    if base_init != "learned":
        init_for = resolve_init(base_init, layout, args)  # bad --init values fail before any work
    check_output_dir(args.out, option="--out")

    failed = 0

    def on_problem(message: str) -> None:
        nonlocal failed
        failed += 1
        print(f"cartoonx explain: skipping {message}", file=sys.stderr)

    paths = outside([path for path, _ in find_images(args.images, on_problem)], args.out, "explain")
    if not paths:  # as compare and generate: nothing to do is an input error
        raise InputError(f"no images to explain; {failed} input(s) skipped")
    stems = output_stems(paths)
    if args.resume:
        done_stems = finished_stems(args.out, stems, run_settings(args, config))
        if done_stems:
            print(f"cartoonx explain: resuming, {len(done_stems)} image(s) already in {args.out}", file=sys.stderr)
        paths, stems = [p for p, s in zip(paths, stems) if s not in done_stems], [s for s in stems if s not in done_stems]
    elif not args.overwrite:
        check_no_earlier_outputs(args.out, stems)
    classifier = rde.create_classifier(args.model, device=device)
    explainer = method_cls(classifier, preset=config)
    if needs_explainer:
        init_for = resolve_init(args.init, layout, args, explainer)
    from tqdm.auto import tqdm

    created = not args.out.exists()
    args.out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(paths), unit="image", desc="explain")
    try:
        done, failed = _explain_all(args, explainer, init_for, preset, device, size, list(zip(paths, stems)), failed, bar)
    except OSError as e:  # writing the outputs (a full disk): one line; the images finished before are complete
        raise write_failure(args.out, e, kept_images(args.out)) from e
    finally:
        bar.close()
        if created:
            remove_if_empty(args.out)  # failed before its first result: no empty folder left behind
    skipped = f"; {failed} skipped (named above)" if failed else ""
    print(f"explained {done} of {done + failed} inputs into {args.out}{skipped}")
    return 1 if failed else 0


def _explain_all(
    args: argparse.Namespace, explainer: Any, init_for: InitFn, preset: Any, device: torch.device, size: int,
    items: list[tuple[Path, str]], failed: int, bar: Any,
) -> tuple[int, int]:
    """Explain ``items`` (path, output stem) and save each as it finishes, counting on ``bar``; returns (done, failed)."""
    from tqdm.auto import tqdm

    from rde.plotting import plot_explanation
    from rde.start import Start


    def on_error(path: Path, message: str) -> None:
        nonlocal failed
        failed += 1
        tqdm.write(f"cartoonx explain: skipping {message}", file=sys.stderr)
        bar.update(1)

    from amortized.image_data import image_batches

    done = 0
    for rows, images in image_batches([path for path, _ in items], size, args.batch_size, on_error):
        batch = [items[i] for i in rows]
        images = images.to(device)
        start = time.perf_counter()
        try:
            init = init_for(images)
            result = explainer.explain(images, init=init, seed=args.seed, show_progress=True)
        except (RuntimeError, FloatingPointError) as e:  # out of memory on a large --batch-size, 16-mixed overflow
            for path, _ in batch:
                on_error(path, f"{path}: optimization failed ({e})")
            continue
        seconds = (time.perf_counter() - start) / len(batch)
        for i, (path, stem) in enumerate(batch):
            one = result[i]
            one.config = {
                **result.config,
                "model": args.model,
                "preset_name": preset.name,
                "init": args.init,
                "seed": args.seed,
                "device": str(device),
                "batch_size": args.batch_size,
                "image": str(path),
            }
            if isinstance(init, Start):  # a learned or warmed-up start: its classifier passes
                one.config["start_steps"] = float(init.cost[i])
            base = args.out / stem
            _, json_path = one.save(base)
            plot_explanation(one, 0, base.with_name(base.name + ".png"))
            # Last and atomic: a .json with "seconds" marks the image finished for --resume.
            _add_to_json(json_path, history={k: v[0].tolist() for k, v in one.history.items()}, seconds=seconds)
            loss = f"{float(one.loss[0, -1]):.4g}" if one.loss.shape[1] else "n/a"
            tqdm.write(
                f"{path}: {one.class_names[0]} (class {int(one.targets[0])}) p={float(one.target_probs[0]):.3f} "
                f"final loss {loss} in {seconds:.1f} s -> {base}.png"
            )
            done += 1
            bar.update(1)
    return done, failed


def _add_to_json(path: Path, **fields) -> None:
    from rde.io import write_json_atomic

    meta = json.loads(path.read_text())
    meta.update(fields)
    write_json_atomic(path, meta)
