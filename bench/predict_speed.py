"""Images per second of ``rca-predict`` on a split of a trained run's dataset, with and without test-time
augmentation, and the mIoU of what it wrote (the same as the segmentation stage's evaluation).

Everything ``rca-predict`` does per image is timed: decoding the file, the forward passes, the argmax,
writing the palette PNG. Each setting writes into a fresh folder (nothing is skipped).

    python bench/predict_speed.py RUN_DIR [--split val] [--threads 2] [--batch-size 8]

RUN_DIR: an ``rca-pipeline`` run (``make run`` writes one under logs/pipeline/runs/) or an ``rca-seg`` run.
"""

import argparse
import json
import tempfile
from pathlib import Path

import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from rca_lightning.imaging.palette_png import read_mask_png
from rca_lightning.inference.prediction import predict_files
from rca_lightning.inference.segmenter import Segmenter
from rca_lightning.metrics import iou_from_confusion


def split_files(dataset_root: Path, split: str) -> tuple[list[Path], list[Path]]:
    ids = (dataset_root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
    images = [dataset_root / "JPEGImages" / f"{image_id}.jpg" for image_id in ids]
    return images, [dataset_root / "SegmentationClass" / f"{image_id}.png" for image_id in ids]


def miou(folder: Path, images: list[Path], truths: list[Path], num_classes: int) -> float:
    confusion = MulticlassConfusionMatrix(num_classes + 1, ignore_index=255)
    for image, truth in zip(images, truths, strict=True):
        prediction = torch.from_numpy(read_mask_png(folder / f"{image.stem}.png")).long()
        confusion.update(prediction[None], torch.from_numpy(read_mask_png(truth)).long()[None])
    return float(iou_from_confusion(confusion.compute()).nanmean() * 100)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--split", default="val")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    run_settings = Segmenter.from_run(args.run_dir, source="seg", device="cpu")
    images, truths = split_files(Path(run_settings.run.dataset_root), args.split)
    run_views = (list(run_settings.scales), run_settings.flip)
    rows = []
    for label, (scales, flip) in (("run's TTA", run_views), ("no TTA", ([1.0], False))):
        segmenter = Segmenter.from_run(
            args.run_dir, source="seg", tta_scales=scales, tta_flip=flip, device="cpu"
        )
        with tempfile.TemporaryDirectory() as folder:
            summary = predict_files(
                segmenter, images, Path(folder), batch_size=args.batch_size, progress=False
            )
            score = miou(Path(folder), images, truths, len(segmenter.class_names))
        rows.append((label, scales, flip, summary.written, summary.images_per_second, score))

    recorded = json.loads((run_settings.run.folder / "metrics.json").read_text())["metrics"].get(
        "test/seg_mIoU"
    )
    print(
        f"rca-predict on {len(images)} {args.split} images, CPU, {args.threads} threads, "
        f"batch {args.batch_size}"
    )
    print(f"{'setting':<12} {'scales':<24} {'flip':<5} {'images':>6} {'images/s':>9} {'mIoU':>7}")
    for label, scales, flip, count, rate, score in rows:
        print(f"{label:<12} {str(scales):<24} {str(flip):<5} {count:>6} {rate:>9.2f} {score:>7.2f}")
    if recorded is not None:
        print(f"segmentation stage's evaluation (test/seg_mIoU, the run's TTA): {recorded:.2f}")


if __name__ == "__main__":
    main()
