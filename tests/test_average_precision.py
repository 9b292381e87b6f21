"""Average precision of the classes a split holds, and the images behind each class's score, against slow
references written from the definitions; the same values from two gloo processes as from one."""

import math
import warnings
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp
from torchmetrics.classification import MultilabelAveragePrecision

from rca_lightning.lit.wsss_method import WSSSMethod
from rca_lightning.metrics import ClassImageCount, PresentClassAveragePrecision
from tests.ap_ddp_probe import score_share


def reference_average_precision(scores: list[float], labels: list[int]) -> float:
    """AP from the definition, NaN without a positive: for each positive image, the precision among the
    images scored at least as high as it (the images tied at a score enter together, as on a step-wise
    precision-recall curve over the distinct scores), averaged over the positives."""
    precisions = []
    for score, label in zip(scores, labels, strict=True):
        if label == 1:
            ranked_with = [
                other for other_score, other in zip(scores, labels, strict=True) if other_score >= score
            ]
            precisions.append(sum(ranked_with) / len(ranked_with))
    return sum(precisions) / len(precisions) if precisions else math.nan


def reference_per_class(scores: torch.Tensor, tags: torch.Tensor) -> list[float]:
    """(N, C) scores and 0 / 1 tags -> the C reference APs."""
    return [
        reference_average_precision(scores[:, c].tolist(), tags[:, c].tolist()) for c in range(tags.shape[1])
    ]


def present_class_ap(scores: torch.Tensor, tags: torch.Tensor, batch_size: int = 3) -> dict:
    metric = PresentClassAveragePrecision(tags.shape[1])
    for start in range(0, len(tags), batch_size):
        metric.update(scores[start : start + batch_size], tags[start : start + batch_size])
    return metric.compute()


def assert_matches_reference(result: dict, scores: torch.Tensor, tags: torch.Tensor) -> None:
    expected = reference_per_class(scores, tags)
    for got, want in zip(result["average_precision"].tolist(), expected, strict=True):
        assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, abs=1e-6)
    assert result["positives"].tolist() == tags.sum(0).tolist()


def test_classes_without_a_positive_image_have_no_ap_and_stay_out_of_the_mean():
    # 5 images, 4 classes; classes 1 and 3 have no positive image in this split.
    scores = torch.tensor(
        [
            [0.9, 0.8, 0.1, 0.3],
            [0.2, 0.1, 0.7, 0.2],
            [0.6, 0.4, 0.4, 0.9],
            [0.3, 0.2, 0.8, 0.1],
            [0.1, 0.5, 0.2, 0.4],
        ]
    )
    tags = torch.tensor([[1, 0, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # absence is a NaN, not torchmetrics' warning per class
        result = present_class_ap(scores, tags)
    assert_matches_reference(result, scores, tags)
    per_class = result["average_precision"]
    assert torch.isnan(per_class[[1, 3]]).all() and not torch.isnan(per_class[[0, 2]]).any()
    # Class 0: positives ranked 1st and 2nd -> 1; class 2: ranks 1, 2 and 4 of (0.8, 0.7, 0.4, 0.2) -> 11/12.
    assert per_class[0].item() == pytest.approx(1.0) and per_class[2].item() == pytest.approx(
        (1 + 1 + 3 / 4) / 3
    )
    assert per_class.nanmean().item() == pytest.approx((1 + 11 / 12) / 2)
    # What torchmetrics' own mean gives: the absent classes counted as 0, half the value.
    plain = MultilabelAveragePrecision(num_labels=4, average=None)
    plain.update(scores, tags)
    with pytest.warns(UserWarning, match="No positive samples found in target"):
        plain_per_class = plain.compute()
    assert plain_per_class.mean().item() == pytest.approx((1 + 11 / 12) / 4)


def test_a_class_with_one_positive_image_scores_the_precision_at_its_rank():
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.9], [0.7, 0.2], [0.6, 0.3], [0.5, 0.4]])
    tags = torch.tensor([[0, 0], [0, 1], [1, 0], [0, 0], [0, 0]])  # one positive each: 3rd and 1st
    result = present_class_ap(scores, tags, batch_size=2)
    assert result["average_precision"].tolist() == pytest.approx([1 / 3, 1.0])
    assert_matches_reference(result, scores, tags)


def test_images_tied_at_a_score_enter_the_ranking_together():
    # A positive tied with a negative at the top: precision 1/2 there, not 1 (nor 1/2 by order of arrival).
    scores = torch.tensor([[0.5], [0.5], [0.4], [0.3], [0.3], [0.3]]).repeat(1, 2)
    tags = torch.tensor([[0], [1], [1], [1], [0], [0]]).repeat(1, 2)
    tags[:, 1] = tags[:, 1].flip(0)  # the second class: the tie at the top holds its only negative
    result = present_class_ap(scores, tags, batch_size=4)
    # Precision at 0.5 (both enter), 0.4 and 0.3 (three enter): 1/2, 2/3, 3/6.
    assert result["average_precision"][0].item() == pytest.approx((1 / 2 + 2 / 3 + 3 / 6) / 3)
    assert_matches_reference(result, scores, tags)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_splits_with_ties_and_missing_classes_match_the_reference(seed):
    generator = torch.Generator().manual_seed(seed)
    scores = (torch.rand(23, 6, generator=generator) * 5).round() / 5  # 6 distinct values: many ties
    tags = (torch.rand(23, 6, generator=generator) < 0.3).long()
    tags[:, 4] = 0  # a class absent from the split
    tags[:, 5] = 0
    tags[7, 5] = 1  # a class with a single positive
    result = present_class_ap(scores, tags, batch_size=5)
    assert_matches_reference(result, scores, tags)
    expected = [value for value in reference_per_class(scores, tags) if not math.isnan(value)]
    assert result["average_precision"].nanmean().item() == pytest.approx(sum(expected) / len(expected))


def test_all_classes_present_gives_torchmetrics_own_ap():
    generator = torch.Generator().manual_seed(3)
    scores = torch.rand(30, 4, generator=generator)
    tags = (torch.rand(30, 4, generator=generator) < 0.5).long()
    assert (tags.sum(0) > 0).all()
    plain = MultilabelAveragePrecision(num_labels=4, average="macro")
    plain.update(scores, tags)
    assert present_class_ap(scores, tags)["average_precision"].mean().item() == pytest.approx(
        plain.compute().item()
    )


def test_average_is_refused():
    with pytest.raises(ValueError, match="average='macro': the AP is per class"):
        PresentClassAveragePrecision(3, average="macro")


def reference_image_counts(masks: torch.Tensor, num_labels: int) -> list[int]:
    return [sum(int(label in mask[mask != 255].tolist()) for mask in masks) for label in range(num_labels)]


def test_class_image_count_counts_images_holding_each_class_outside_ignored_pixels():
    masks = torch.tensor(
        [
            [[0, 0], [1, 1]],  # background and class 1
            [[0, 255], [255, 255]],  # background only
            [[255, 255], [255, 255]],  # all ignored: no class
            [[2, 1], [1, 255]],  # classes 1 and 2, no background
        ]
    )
    counter = ClassImageCount(4)
    counter.update(masks[:3])
    counter.update(masks[3:])
    assert counter.compute().tolist() == reference_image_counts(masks, 4) == [2, 2, 1, 0]
    with pytest.raises(ValueError, match=r"target: expected values 0\.\.3 or 255"):
        counter.update(torch.full((1, 2, 2), 4))


@pytest.mark.slow
def test_two_processes_give_the_one_process_values(tmp_path):
    generator = torch.Generator().manual_seed(4)
    num_images, num_classes = 9, 5
    scores = (torch.rand(num_images, num_classes, generator=generator) * 4).round() / 4  # ties across ranks
    tags = (torch.rand(num_images, num_classes, generator=generator) < 0.4).long()
    tags[:, 3] = 0  # absent from the split
    shares = [[0, 2, 4, 6, 8], [1, 3, 5, 7]]
    tags[:, 4] = 0
    tags[[3, 7], 4] = 1  # present on rank 1 only
    tags[0, 0] = tags[1, 0] = 1  # class 0 on both ranks
    masks = torch.randint(0, num_classes + 1, (num_images, 4, 4), generator=generator)
    masks[masks == 4] = 255
    masks[5, 0, 0] = 4  # a class whose only image is on rank 1
    mp.spawn(score_share, args=(2, tmp_path, shares, scores, tags, masks), nprocs=2)

    one_process = present_class_ap(scores, tags)
    counter = ClassImageCount(num_classes + 1)
    counter.update(masks)
    assert_matches_reference(one_process, scores, tags)
    for rank in (0, 1):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(
            result["average_precision"], one_process["average_precision"], equal_nan=True
        )
        assert torch.equal(result["positives"], one_process["positives"])
        assert torch.equal(result["images"], counter.compute())
    assert math.isnan(one_process["average_precision"][3]) and not math.isnan(
        one_process["average_precision"][4]
    )
    assert counter.compute()[4].item() == 1


def logged_ap(scores: torch.Tensor, tags: torch.Tensor, class_names: list[str]) -> dict[str, float]:
    """What WSSSMethod logs at a validation epoch's end for these val images."""
    metric = PresentClassAveragePrecision(len(class_names))
    metric.update(scores, tags)
    return WSSSMethod.average_precision_metrics(SimpleNamespace(val_ap=metric, class_names=class_names))


def test_the_module_logs_ap_only_for_classes_with_a_tagged_val_image():
    scores = torch.tensor([[0.9, 0.2, 0.3], [0.1, 0.8, 0.6], [0.7, 0.6, 0.1]])
    tags = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 1, 0]])  # "star" has no val image
    logged = logged_ap(scores, tags, ["disc", "square", "star"])
    expected_square = (1 + 1) / 2  # positives scored 0.8 and 0.6, the negatives lower
    assert logged == {
        "val/AP_images_disc": 1.0,
        "val/AP_images_square": 2.0,
        "val/AP_images_star": 0.0,
        "val/AP_disc": pytest.approx(100.0),
        "val/AP_square": pytest.approx(100 * expected_square),
        "val/mAP": pytest.approx(100.0),
    }
    assert all(math.isfinite(value) for value in logged.values())  # metrics.json holds no NaN


def test_no_tagged_val_image_logs_no_map(recwarn):
    logged = logged_ap(torch.rand(2, 2), torch.zeros(2, 2, dtype=torch.long), ["disc", "square"])
    assert logged == {"val/AP_images_disc": 0.0, "val/AP_images_square": 0.0}
    assert any("val/mAP not logged" in str(warning.message) for warning in recwarn)
