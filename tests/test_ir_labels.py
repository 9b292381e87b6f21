"""IRN's relation labels against a per-pixel reference written from the description (IRN_REFERENCE.md §4)."""

import numpy as np
import pytest

from rca_lightning.pseudo.crf import DenseCRF
from rca_lightning.pseudo.ir_labels import IRLabelRefiner


def reference_pass(seeds, classes, threshold):
    """Per pixel: background (0) unless some seed beats the constant background score, else that class + 1."""
    _, height, width = seeds.shape
    labels = np.zeros((height, width), np.uint8)
    for y in range(height):
        for x in range(width):
            best, label = threshold, 0
            for k, class_index in enumerate(classes):
                if seeds[k, y, x] > best:
                    best, label = seeds[k, y, x], class_index + 1
            labels[y, x] = label
    return labels


def reference_crf_pass(image, seeds, classes, threshold, crf, confidence=0.7):
    """The pass's labels as the CRF's unary: own label ``confidence``, the others share the rest."""
    labels = reference_pass(seeds, classes, threshold)
    values = [0, *(c + 1 for c in classes)]
    scores = np.zeros((len(values), *labels.shape), np.float32)
    for channel, value in enumerate(values):
        scores[channel] = np.where(labels == value, confidence, (1 - confidence) / (len(values) - 1))
    return np.array(values, np.uint8)[crf(image, scores).argmax(0)]


def reference_labels(foreground, background):
    labels = np.full(foreground.shape, 255, np.uint8)
    for index in np.ndindex(foreground.shape):
        if foreground[index] > 0:
            labels[index] = foreground[index]
        elif background[index] == 0:
            labels[index] = 0
    return labels


@pytest.fixture
def inputs():
    generator = np.random.default_rng(0)
    image = generator.integers(0, 256, (12, 14, 3), dtype=np.uint8)
    seeds = np.zeros((2, 12, 14), np.float32)
    seeds[0, 2:8, 2:7] = np.linspace(0.02, 0.9, 30).reshape(6, 5)  # strong to faint
    seeds[1, 5:11, 8:13] = np.linspace(0.5, 0.03, 30).reshape(6, 5)
    return image, seeds, np.array([2, 5])


def test_without_crf_smoothing_the_labels_are_the_two_thresholds(inputs):
    image, seeds, classes = inputs
    crf = DenseCRF(iterations=0)  # the unary alone: each pass keeps its arg-max
    labels = IRLabelRefiner(crf=crf)(image, seeds, classes, "image")
    expected = reference_labels(reference_pass(seeds, classes, 0.30), reference_pass(seeds, classes, 0.05))
    np.testing.assert_array_equal(labels, expected)
    assert {0, 3, 6, 255} <= set(np.unique(labels).tolist())


def test_with_irn_crf_each_pass_is_the_crf_of_its_labels(inputs):
    image, seeds, classes = inputs
    refiner = IRLabelRefiner(foreground_threshold=0.4, background_threshold=0.1)
    labels = refiner(image, seeds, classes, "image")
    foreground = reference_crf_pass(image, seeds, classes, 0.4, refiner.crf)
    background = reference_crf_pass(image, seeds, classes, 0.1, refiner.crf)
    np.testing.assert_array_equal(labels, reference_labels(foreground, background))
    assert refiner.crf.bilateral_sxy == 50 and refiner.crf.bilateral_srgb == 5
    assert refiner.crf.channel_order == "rgb"


def test_an_image_without_tags_is_background(inputs):
    image, _, _ = inputs
    labels = IRLabelRefiner()(image, np.zeros((0, 12, 14), np.float32), np.array([], int), "image")
    assert (labels == 0).all()
