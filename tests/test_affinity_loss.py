"""IRN's affinity loss against a slow per-pixel-pair reference written from the description
(IRN_REFERENCE.md §5): value and gradient."""

import math

import numpy as np
import pytest
import torch

from rca_lightning.losses.affinity_loss import affinity_loss


def reference_path(start, end):
    (y0, x0), (y1, x1) = start, end
    n = max(abs(y1 - y0), abs(x1 - x0))
    return {
        (math.floor(y0 + k / n * (y1 - y0) + 0.5), math.floor(x0 + k / n * (x1 - x0) + 0.5))
        for k in range(n + 1)
    }


def reference_loss(boundary, labels, radius, eps=1e-5):
    """Every unordered pair of pixels closer than the radius, one image after another."""
    terms = {"bg_positive": [], "fg_positive": [], "negative": []}
    batch, height, width = labels.shape
    pixels = [(y, x) for y in range(height) for x in range(width)]
    for b in range(batch):
        for i, p in enumerate(pixels):
            for q in pixels[i + 1 :]:
                if (p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2 >= radius**2:
                    continue
                lp, lq = int(labels[b][p]), int(labels[b][q])
                if lp == 255 or lq == 255:
                    continue
                affinity = 1 - torch.stack([boundary[b, y, x] for y, x in reference_path(p, q)]).max()
                if lp == lq:
                    terms["bg_positive" if lp == 0 else "fg_positive"].append(-torch.log(affinity + eps))
                else:
                    terms["negative"].append(-torch.log(1 + eps - affinity))
    means = {
        k: torch.stack(v).mean() if v else torch.zeros((), dtype=boundary.dtype) for k, v in terms.items()
    }
    return 0.5 * (0.5 * means["bg_positive"] + 0.5 * means["fg_positive"] + means["negative"]), means


@pytest.mark.parametrize("radius", [3, 5])
def test_loss_and_gradient_match_the_pair_by_pair_reference(radius):
    generator = np.random.default_rng(0)
    labels = torch.from_numpy(generator.choice([0, 0, 1, 2, 255], size=(2, 7, 8)).astype(np.int64))
    logits = torch.from_numpy(generator.normal(size=(2, 7, 8)))
    first = logits.clone().requires_grad_(True)
    loss, terms = affinity_loss(torch.sigmoid(first), labels, radius=radius)
    loss.backward()
    second = logits.clone().requires_grad_(True)
    expected, expected_terms = reference_loss(torch.sigmoid(second), labels, radius)
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
    for kind, value in expected_terms.items():
        torch.testing.assert_close(terms[kind], value, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(first.grad, second.grad, rtol=1e-9, atol=1e-12)


def test_a_kind_without_pairs_adds_nothing():
    labels = torch.zeros(1, 5, 5, dtype=torch.long)  # background only: no foreground or negative pairs
    boundary = torch.full((1, 5, 5), 0.2, dtype=torch.float64)
    loss, terms = affinity_loss(boundary, labels, radius=3)
    assert terms["fg_positive"] == 0 and terms["negative"] == 0
    torch.testing.assert_close(loss, 0.25 * -torch.log(torch.tensor(0.8 + 1e-5, dtype=torch.float64)))
