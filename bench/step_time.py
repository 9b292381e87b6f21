"""Training-step time of full RCA vs the plain CAM baseline, and the RCA work vectorised vs per item.

1. One optimisation step (forward, losses, backward, SGD step, bank enqueue) of full RCA divided by the
   plain CAM baseline's, and of RCA on EPS divided by EPS's, same backbone, batch and image size (the
   default ``experiment=synthetic`` config), with a bank already holding entries and prototypes so the
   contrast and aggregation really run.
2. The RCA-specific work, vectorised (the library) vs the slow per-item references of the test suite:
   masked pooling, bank update, contrast loss, aggregation. Sizes are kept small enough for the references
   to finish; the ratio is what matters.

    python bench/step_time.py [--steps 10] [extra Hydra overrides ...]
"""

import argparse
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import open_dict

import rca_lightning
from rca_lightning.memory import masked_average_pool, region_masks
from rca_lightning.utils.resolvers import register_resolvers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.references import (  # noqa: E402
    reference_enqueue,
    reference_masked_average_pool,
    reference_mixup_contrast_loss,
    reference_semantic_aggregation,
)


def compose_config(overrides: list[str]):
    register_resolvers()
    config_dir = str(Path(rca_lightning.__file__).parent / "conf")
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = "."
    return cfg


def timed(function, repeats: int) -> float:
    function()  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - started) / repeats


def training_step_time(overrides: list[str], steps: int) -> float:
    cfg = compose_config(overrides)
    torch.manual_seed(0)
    module = instantiate(cfg.model)
    batch_size, size = cfg.data.batch_size, cfg.data.image_size
    images = torch.randn(batch_size, 3, size, size)
    labels = (torch.rand(batch_size, module.net.num_classes) > 0.6).float()
    saliency = torch.rand(batch_size, size, size)  # read by the EPS methods only
    bank = module.memory_bank
    bank.enqueue(
        torch.randn(bank.num_classes * bank.queue_length, bank.dim),
        torch.arange(bank.num_classes).repeat_interleave(bank.queue_length),
    )
    bank.refresh_prototypes()
    module.contrast_active = True
    optimizer = torch.optim.SGD(module.parameters(), lr=1e-4, momentum=0.9)

    def step() -> None:
        module.log = lambda *args, **kwargs: None  # no trainer attached
        output = module.training_step({"image": images, "labels": labels, "saliency": saliency}, 0)
        optimizer.zero_grad()
        output["loss"].backward()
        optimizer.step()
        if "region_embeddings" in output:
            image_index, class_index = output["region_confident"].nonzero(as_tuple=True)
            bank.enqueue(output["region_embeddings"][image_index, class_index], class_index)

    return timed(step, steps)


def rca_work_ratios(repeats: int) -> dict[str, tuple[float, float]]:
    """(vectorised seconds, per-item reference seconds) for each piece of RCA-specific work."""
    from rca_lightning.losses import mixup_contrast_loss, sample_mixup
    from rca_lightning.memory import RegionalMemoryBank
    from rca_lightning.models import SemanticAggregation

    torch.manual_seed(0)
    batch, classes, dim, height, width, queue_length = 4, 6, 32, 10, 10, 32
    features = torch.randn(batch, dim, height, width)
    masks = region_masks(torch.randn(batch, classes, height, width))
    results = {}
    results["masked pooling"] = (
        timed(lambda: masked_average_pool(features, masks), repeats),
        timed(lambda: reference_masked_average_pool(features, masks), 1),
    )

    bank = RegionalMemoryBank(classes, dim, queue_length=queue_length)
    # One training step's worth of confident regions (batch 16, about 2 classes each).
    entries, entry_classes = torch.randn(32, dim), torch.randint(0, classes, (32,))
    written = torch.zeros(classes, queue_length, dtype=torch.bool)
    results["bank update"] = (
        timed(lambda: bank.enqueue(entries, entry_classes), repeats),
        timed(
            lambda: reference_enqueue(bank.queue, bank.pointer, written, entries, entry_classes, "ema", 0.99),
            1,
        ),
    )

    queries, query_classes = torch.randn(8, dim), torch.randint(0, classes, (8,))
    image_index = torch.arange(8) // 2
    lambdas, partners = sample_mixup(image_index, 8.0)
    memory, memory_valid = bank.queue, bank.valid_slots()
    arguments = (queries, query_classes, image_index, memory, memory_valid, 0.07, lambdas, partners)
    results["contrast loss"] = (
        timed(lambda: mixup_contrast_loss(*arguments), repeats),
        timed(lambda: reference_mixup_contrast_loss(*arguments), 1),
    )

    aggregation = SemanticAggregation(dim, dim, 16).eval()
    prototypes, prototype_valid = torch.randn(classes, 4, dim), torch.ones(classes, 4, dtype=torch.bool)
    small = features[:1]
    with torch.no_grad():
        results["aggregation"] = (
            timed(lambda: aggregation(small, prototypes, prototype_valid), repeats),
            timed(lambda: reference_semantic_aggregation(aggregation, small, prototypes, prototype_valid), 1),
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args, overrides = parser.parse_known_args()
    torch.set_num_threads(args.threads)

    baseline = training_step_time(["model=cam", *overrides], args.steps)
    full = training_step_time(overrides, args.steps)
    cfg = compose_config(overrides)
    print(
        f"training step, batch {cfg.data.batch_size} at {cfg.data.image_size} px, "
        f"{cfg.model.net.backbone.name} OS {cfg.model.net.backbone.output_stride}, {args.threads} threads:"
    )
    print(f"  plain CAM {baseline:.3f} s, full RCA {full:.3f} s, ratio RCA / CAM = {full / baseline:.2f}")
    eps = training_step_time(["model=eps", *overrides], args.steps)
    rca_eps = training_step_time(["model=rca_eps", *overrides], args.steps)
    print(f"  EPS {eps:.3f} s, RCA on EPS {rca_eps:.3f} s, ratio RCA-on-EPS / EPS = {rca_eps / eps:.2f}")
    print("RCA-specific work, vectorised vs per-item reference (one run each):")
    for name, (vectorised, reference) in rca_work_ratios(repeats=20).items():
        print(
            f"  {name:15s} {vectorised * 1e3:8.2f} ms vs {reference * 1e3:10.1f} ms:"
            f" {reference / vectorised:8.0f}x"
        )


if __name__ == "__main__":
    main()
