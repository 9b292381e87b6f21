"""mIoU and the CAM threshold sweep against slow per-pixel references."""

import math

import pytest
import torch

from rca_lightning.metrics import CAMThresholdSweep, iou_from_confusion, miou_from_confusion
from rca_lightning.pseudo.cam_scores import normalized_cam_scores


def reference_confusion(prediction: torch.Tensor, target: torch.Tensor, num_labels: int) -> torch.Tensor:
    confusion = torch.zeros(num_labels, num_labels, dtype=torch.long)
    for p, t in zip(prediction.flatten().tolist(), target.flatten().tolist(), strict=True):
        if t != 255:
            confusion[t, p] += 1
    return confusion


def reference_miou(confusion: torch.Tensor) -> float:
    ious = []
    for k in range(confusion.shape[0]):
        tp = confusion[k, k].item()
        fp = confusion[:, k].sum().item() - tp
        fn = confusion[k, :].sum().item() - tp
        if tp + fp + fn > 0:
            ious.append(tp / (tp + fp + fn))
    return sum(ious) / len(ious)


def reference_prediction(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    batch, classes, height, width = scores.shape
    prediction = torch.zeros(batch, height, width, dtype=torch.long)
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                values = scores[b, :, y, x].tolist()
                best = max(range(classes), key=lambda c: values[c])
                prediction[b, y, x] = best + 1 if values[best] > threshold else 0
    return prediction


def test_miou_leaves_out_classes_absent_from_prediction_and_truth():
    confusion = torch.tensor([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    assert torch.isnan(iou_from_confusion(confusion)[2])
    assert miou_from_confusion(confusion).item() == pytest.approx(reference_miou(confusion))
    assert miou_from_confusion(confusion).item() == pytest.approx((5 / 8 + 3 / 6) / 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sweep_matches_per_threshold_argmax(seed):
    generator = torch.Generator().manual_seed(seed)
    num_classes = 3
    labels = (torch.rand(2, num_classes, generator=generator) > 0.4).float()
    cams = torch.randn(2, num_classes, 5, 6, generator=generator)
    scores = normalized_cam_scores(cams, labels, size=(9, 11))
    target = torch.randint(0, num_classes + 1, (2, 9, 11), generator=generator)
    target[torch.rand(target.shape, generator=generator) < 0.1] = 255
    # Thresholds that coincide with score values exercise the strict ">" rule.
    thresholds = torch.tensor([0.0, 0.1, 0.25, float(scores.max(1).values[0, 0, 0]), 0.9])
    thresholds = thresholds.sort().values.unique()
    sweep = CAMThresholdSweep(num_classes, thresholds)
    sweep.update(scores[:1], target[:1])
    sweep.update(scores[1:], target[1:])
    matrices = sweep.confusion_matrices()
    for t, threshold in enumerate(thresholds.tolist()):
        expected = reference_confusion(reference_prediction(scores, threshold), target, num_classes + 1)
        assert torch.equal(matrices[t], expected), f"threshold {threshold}"
    result = sweep.compute()
    expected_mious = [reference_miou(matrices[t]) for t in range(len(thresholds))]
    assert result["miou"].tolist() == pytest.approx(expected_mious)
    best = max(range(len(thresholds)), key=lambda t: expected_mious[t])
    assert result["best_threshold"].item() == pytest.approx(thresholds[best].item())
    assert result["best_miou"].item() == pytest.approx(expected_mious[best])


def test_sweep_all_background_prediction_scores_background_only():
    sweep = CAMThresholdSweep(2, torch.tensor([0.0, 0.5]))
    target = torch.tensor([[[0, 0, 1, 2]]])
    sweep.update(torch.zeros(1, 2, 1, 4), target)
    result = sweep.compute()
    # Background IoU 2/4, the two object classes 0: mean 1/6 at every threshold.
    assert result["miou"].tolist() == pytest.approx([1 / 6, 1 / 6])


def test_normalized_scores_are_unit_peaked_and_zero_for_absent_classes():
    cams = torch.randn(2, 3, 4, 4)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    scores = normalized_cam_scores(cams, labels, size=(8, 8))
    assert scores.min() >= 0 and scores.max() <= 1
    assert torch.all(scores[0, 1] == 0) and torch.all(scores[1, 0] == 0)
    peaks = scores.flatten(2).amax(-1)
    present_with_activation = (labels > 0) & (cams.flatten(2).amax(-1) > 0)
    assert torch.allclose(peaks[present_with_activation], torch.ones(()), atol=1e-3)
    assert not math.isnan(scores.sum().item())


def test_sweep_rejects_unsorted_thresholds():
    with pytest.raises(ValueError, match="increasing"):
        CAMThresholdSweep(2, torch.tensor([0.5, 0.1]))
