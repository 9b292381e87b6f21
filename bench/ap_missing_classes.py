"""A trained classifier's validation mAP on its val split and on a split missing classes, before and after
issue 28.

The classifier of a training run (``--train-dir``: an ``rca-train`` run or a pipeline's ``classifier``
folder) scores its val split, then the same split without every image that holds one of the dropped classes
(``--drop``; by default the second half of the classes), a split where those classes have no positive
image. *before* is the mean of torchmetrics' per-class AP over every class, as ``val/mAP`` was logged
until issue 28 (a class without a positive image counts as AP 0); *after* is the mean over the classes with a
positive image (``PresentClassAveragePrecision``, what ``val/mAP`` logs now).

    python bench/ap_missing_classes.py --train-dir runs/<run>/classifier [--drop ring star cross]
"""

import argparse
import os
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset
from torchmetrics.classification import MultilabelAveragePrecision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from hydra import compose, initialize_config_dir  # noqa: E402

import rca_lightning  # noqa: E402
from rca_lightning.inference.trained_runs import load_classifier, resolve_training_run  # noqa: E402
from rca_lightning.metrics import PresentClassAveragePrecision  # noqa: E402
from rca_lightning.tasks.stage_settings import datamodule_for  # noqa: E402
from rca_lightning.utils.resolvers import register_resolvers  # noqa: E402


@torch.no_grad()
def scores_and_tags(
    model: torch.nn.Module, dataset, batch_size: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C) sigmoid class scores and (N, C) 0/1 tags of every image of ``dataset``."""
    scores, tags = [], []
    for batch in DataLoader(dataset, batch_size=batch_size):
        scores.append(torch.sigmoid(model.class_logits(model(batch["image"]))))
        tags.append(batch["labels"].long())
    return torch.cat(scores), torch.cat(tags)


def map_before_and_after(scores: torch.Tensor, tags: torch.Tensor) -> tuple[float, float, int]:
    """(mAP over every class, mAP over the classes present, how many are present), in percent."""
    every_class = MultilabelAveragePrecision(num_labels=tags.shape[1], average=None)
    every_class.update(scores, tags)
    present = PresentClassAveragePrecision(num_labels=tags.shape[1])
    present.update(scores, tags)
    result = present.compute()
    before = float(every_class.compute().mean()) * 100
    after = float(result["average_precision"].nanmean()) * 100
    return before, after, int((result["positives"] > 0).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-dir", type=Path, required=True, help="a finished classifier run")
    parser.add_argument("--data", default="synthetic", help="the data config the run used")
    parser.add_argument(
        "--drop", nargs="*", help="classes left out of the second split (default: the last half)"
    )
    args = parser.parse_args()
    run = resolve_training_run(args.train_dir, None, None)
    names = list(run.dataset["class_names"])
    model = load_classifier(run.model_cfg, run.checkpoint, names).eval()
    register_resolvers()
    config_dir = str(Path(rca_lightning.__file__).parent / "conf")
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        data_cfg = compose("train", overrides=[f"data={args.data}"]).data
    datamodule = datamodule_for(data_cfg, run.dataset)  # the run's recorded dataset, read as it is
    datamodule.setup("validate")
    val = datamodule.val_dataset
    dropped = args.drop or names[len(names) // 2 :]
    unknown = sorted(set(dropped) - set(names))
    if unknown:
        parser.error(f"--drop: {unknown} are not classes of the run; expected some of {names}")
    dropped_columns = torch.tensor([names.index(name) for name in dropped])
    kept = torch.from_numpy(val.labels)[:, dropped_columns].sum(1) == 0  # (N,) images without a dropped class
    print(f"run: {args.train_dir} ({len(names)} classes, val split {datamodule.val_split})")
    print("| split | images | classes present | mAP before (every class) | mAP after (classes present) |")
    print("|---|---|---|---|---|")
    splits = {
        datamodule.val_split: val,
        f"{datamodule.val_split} without {', '.join(dropped)}": Subset(
            val, kept.nonzero().flatten().tolist()
        ),
    }
    for split, dataset in splits.items():
        before, after, present = map_before_and_after(*scores_and_tags(model, dataset))
        print(f"| {split} | {len(dataset)} | {present}/{len(names)} | {before:.2f} | {after:.2f} |")


if __name__ == "__main__":
    main()
