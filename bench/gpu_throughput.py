"""Training throughput (images/s) of the shipped presets on one device: the faithful RCA classifier (the
release's VGG-16 preset, ``experiment=voc_rca_vgg16``), the shared-head RCA classifier
(``experiment=voc_rca_resnet101``), the plain CAM classifier of the faithful preset (``model=cam``), all at
their 368 px and batch, and DeepLab-v2 ResNet-101 (``seg_experiment=deeplab_v2_voc``) at its 321 px crop
and batch; each in fp32, under bf16 autocast and in channels_last memory format, with and without
``torch.compile``. A step is the module's own ``training_step`` (the RCA bank already full, so the contrast
and aggregation run), backward and an SGD step; each setting runs for ``--seconds`` after its warm-up.

    python bench/gpu_throughput.py                                  # on the GPU (about 12 min in all)
    python bench/gpu_throughput.py --device cpu --smoke --compile off   # every path in seconds (the tests)

``--json OUT`` also writes the table (``bench/gpu_suite.sh`` merges it with the scale rehearsal's).
"""

import argparse
import itertools
import json
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import rca_lightning
from rca_lightning.utils.resolvers import register_resolvers

# name -> (config, overrides, model key); no pretrained weights (the speed does not depend on them).
PRESETS = {
    "faithful RCA (VGG-16)": ("train", ["experiment=voc_rca_vgg16"], "model"),
    "shared-head RCA (ResNet-101)": ("train", ["experiment=voc_rca_resnet101"], "model"),
    "plain CAM (VGG-16)": ("train", ["experiment=voc_rca_vgg16", "model=cam"], "model"),
    "DeepLab-v2 ResNet-101": ("seg_train", ["seg_experiment=deeplab_v2_voc"], "seg_model"),
}
MODES = ("fp32", "bf16", "channels_last")
# The step-time ratios printed under the table: (preset, the preset it is compared with).
RATIOS = (
    ("faithful RCA (VGG-16)", "plain CAM (VGG-16)"),
    ("shared-head RCA (ResNet-101)", "faithful RCA (VGG-16)"),
)
# --smoke: every code path on a CPU in seconds (tests/test_bench_smoke.py): small backbones, heads and banks.
SMOKE = {
    "model": ["model.net.backbone.name=resnet10t", "model.net.head_width=16"]
    + ["model.net.attention_dim=16", "model.memory_bank.queue_length=4"],
    "seg_model": ["seg_model.net.backbone.name=resnet10t"],
}


def build(preset: str, image_size: int | None, batch_size: int | None, smoke: bool) -> tuple:
    """The preset's LightningModule and one batch of its size (random images, tags and masks)."""
    config_name, overrides, model_key = PRESETS[preset]
    overrides = [
        *overrides,
        f"{model_key}.net.backbone.pretrained=false",
        *(SMOKE[model_key] if smoke else []),
    ]
    register_resolvers()
    with initialize_config_dir(
        config_dir=str(Path(rca_lightning.__file__).parent / "conf"), version_base="1.3"
    ):
        cfg = compose(config_name, overrides=overrides)
    size = image_size or cfg.data.image_size
    batch = batch_size or cfg.data.batch_size
    torch.manual_seed(0)
    module = instantiate(cfg[model_key])
    images = torch.randn(batch, 3, size, size)
    num_classes = len(cfg.data.class_names)
    if model_key == "seg_model":
        return module, {"image": images, "mask": torch.randint(0, num_classes + 1, (batch, size, size))}
    bank = module.memory_bank  # full, with prototypes: every RCA term runs
    bank.enqueue(
        torch.randn(bank.num_classes * bank.queue_length, bank.dim),
        torch.arange(bank.num_classes).repeat_interleave(bank.queue_length),
    )
    bank.refresh_prototypes()
    module.contrast_active = True
    labels = (torch.rand(batch, num_classes) > 0.85).float()
    labels[:, 0] = 1.0  # every image has a tag
    return module, {"image": images, "labels": labels, "saliency": torch.rand(batch, size, size)}


def throughput(preset: str, mode: str, compiled: bool, args: argparse.Namespace) -> float:
    """Images per second of training steps of ``preset`` in ``mode``."""
    device = args.device
    module, batch = build(preset, args.image_size, args.batch_size, args.smoke)
    module = module.to(device).train()
    memory_format = torch.channels_last if mode == "channels_last" else torch.contiguous_format
    module = module.to(memory_format=memory_format)
    batch = {
        key: value.to(device, memory_format=memory_format) if value.dim() == 4 else value.to(device)
        for key, value in batch.items()
    }
    if compiled:
        module.net = torch.compile(module.net)
    module.log = lambda *args, **kwargs: None  # no trainer attached
    optimizer = torch.optim.SGD(module.parameters(), lr=1e-5, momentum=0.9)
    autocast = torch.autocast(device, dtype=torch.bfloat16) if mode == "bf16" else nullcontext()

    def step() -> None:
        with autocast:
            output = module.training_step(batch, 0)
        loss = output["loss"] if isinstance(output, dict) else output
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def synchronise() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(3 if compiled else 2):  # warm-up (and compilation)
        step()
    synchronise()
    steps, started = 0, time.perf_counter()
    while steps == 0 or time.perf_counter() - started < args.seconds:
        step()
        steps += 1
        synchronise()
    return steps * len(batch["image"]) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seconds", type=float, default=15.0, help="timed seconds per setting")
    parser.add_argument("--presets", nargs="+", choices=list(PRESETS), default=list(PRESETS))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--compile", choices=("both", "off", "on"), default="both")
    parser.add_argument("--image-size", type=int, default=None, help="instead of the preset's")
    parser.add_argument("--batch-size", type=int, default=None, help="instead of the preset's")
    parser.add_argument("--smoke", action="store_true", help="tiny networks at 32 px, 2 images, no timing")
    parser.add_argument("--json", type=Path, help="also write the table here")
    args = parser.parse_args()
    if args.smoke:
        args.image_size, args.batch_size, args.seconds = 32, 2, 0.0
    compile_choices = {"both": (False, True), "off": (False,), "on": (True,)}[args.compile]
    settings = list(itertools.product(args.modes, compile_choices))
    on_gpu = args.device.startswith("cuda")
    device = torch.cuda.get_device_name() if on_gpu else f"CPU, {torch.get_num_threads()} threads"
    print(f"training images/s on {device}, torch {torch.__version__}")
    columns = [f"{mode}{' compiled' if compiled else ''}" for mode, compiled in settings]
    print("| preset | " + " | ".join(columns) + " |")
    print("|---" * (1 + len(columns)) + "|")
    speeds = {}
    for preset in args.presets:
        speeds[preset] = [throughput(preset, mode, compiled, args) for mode, compiled in settings]
        print(f"| {preset} | " + " | ".join(f"{speed:.3g}" for speed in speeds[preset]) + " |", flush=True)
    # Step-time ratios (the inverse ratio of images/s at the same batch), per column.
    for slower, faster in RATIOS:
        if slower in speeds and faster in speeds:
            ratios = [f / s for s, f in zip(speeds[slower], speeds[faster], strict=True)]
            print(f"step time {slower} / {faster}: " + ", ".join(f"{r:.2f}" for r in ratios))
    if args.json:
        table = {
            "device": device,
            "torch": torch.__version__,
            "columns": columns,
            "images_per_second": speeds,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
