"""Semantic contrast loss against per-query, per-positive, per-negative loops with math.exp / math.log."""

import math

import pytest
import torch
import torch.nn.functional as F

from rca_lightning.losses import SemanticContrastLoss, per_class_contrast
from rca_lightning.losses.semantic_contrast import mixup_contrast_loss, sample_mixup
from rca_lightning.utils.errors import InvalidSetting
from tests.references import (
    reference_mixup_contrast_loss,
    reference_per_class_contrast,
    reference_release_mixup_contrast_loss,
)


def _memory(seed: int, num_classes: int = 4, queue_length: int = 5, dim: int = 6):
    generator = torch.Generator().manual_seed(seed)
    memory = torch.randn(num_classes, queue_length, dim, generator=generator, dtype=torch.float64)
    memory_valid = torch.rand(num_classes, queue_length, generator=generator) > 0.4
    memory_valid[0] = True
    memory_valid[1] = False  # a class with no valid slot: undefined loss
    return memory, memory_valid, generator


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_per_class_contrast_matches_reference(seed: int, temperature: float) -> None:
    memory, memory_valid, generator = _memory(seed)
    queries = F.normalize(torch.randn(5, 6, generator=generator, dtype=torch.float64), dim=-1)
    loss, defined = per_class_contrast(queries, memory, memory_valid, temperature)
    expected_loss, expected_defined = reference_per_class_contrast(queries, memory, memory_valid, temperature)
    assert torch.equal(defined, expected_defined)
    assert not defined[:, 1].any()
    torch.testing.assert_close(loss, expected_loss, atol=1e-5, rtol=1e-5)


def test_only_one_class_with_entries_has_no_negatives() -> None:
    memory, memory_valid, generator = _memory(3)
    memory_valid[1:] = False
    queries = F.normalize(torch.randn(3, 6, generator=generator, dtype=torch.float64), dim=-1)
    loss, defined = per_class_contrast(queries, memory, memory_valid, 0.07)
    expected_loss, expected_defined = reference_per_class_contrast(queries, memory, memory_valid, 0.07)
    assert torch.equal(defined, expected_defined) and defined[:, 0].all() and not defined[:, 1:].any()
    assert torch.equal(loss, torch.zeros(3, 4, dtype=torch.float64))  # -log(1) without negatives
    torch.testing.assert_close(loss, expected_loss)


def test_unwritten_slots_are_never_used() -> None:
    memory, memory_valid, generator = _memory(4)
    queries = F.normalize(torch.randn(4, 6, generator=generator, dtype=torch.float64), dim=-1)
    queries.requires_grad_()
    clean, _ = per_class_contrast(queries, memory, memory_valid, 0.1)
    (clean_grad,) = torch.autograd.grad(clean.sum(), queries)
    poisoned = memory.clone()
    poisoned[~memory_valid] = 1e30
    poisoned[1, 0] = float("nan")
    loss, _ = per_class_contrast(queries, poisoned, memory_valid, 0.1)
    (grad,) = torch.autograd.grad(loss.sum(), queries)
    assert torch.equal(loss, clean)
    assert torch.equal(grad, clean_grad)


def test_tiny_temperature_large_logits_stay_finite_and_exact() -> None:
    memory, memory_valid, generator = _memory(5)
    queries = F.normalize(torch.randn(4, 6, generator=generator), dim=-1).requires_grad_()
    loss, _ = per_class_contrast(queries, memory.float(), memory_valid, 1e-4)  # logits up to 1e4
    assert torch.isfinite(loss).all()
    expected, _ = reference_per_class_contrast(queries.detach().double(), memory, memory_valid, 1e-4)
    torch.testing.assert_close(loss.double(), expected, atol=1e-5, rtol=1e-4)
    loss.sum().backward()
    assert torch.isfinite(queries.grad).all()


def test_half_precision_queries_are_computed_in_float32() -> None:
    memory, memory_valid, generator = _memory(10)
    queries = F.normalize(torch.randn(3, 6, generator=generator), dim=-1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = per_class_contrast(queries.bfloat16(), memory.bfloat16(), memory_valid, 0.01)
    expected, _ = reference_per_class_contrast(
        queries.bfloat16().double(), memory.bfloat16().double(), memory_valid, 0.01
    )
    assert loss.dtype == torch.float32 and torch.isfinite(loss).all()
    torch.testing.assert_close(loss.double(), expected, atol=1e-4, rtol=1e-4)


def test_gradients_reach_queries_not_memory() -> None:
    memory, memory_valid, generator = _memory(6)
    memory = memory.clone().requires_grad_()
    embeddings = torch.randn(5, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    loss = SemanticContrastLoss(0.07)(
        embeddings, torch.tensor([0, 2, 3, 0, 1]), torch.tensor([0, 0, 1, 2, 2]), memory, memory_valid
    )
    loss.backward()
    assert (
        embeddings.grad is not None
        and torch.isfinite(embeddings.grad).all()
        and embeddings.grad.abs().sum() > 0
    )
    assert memory.grad is None


def _batch(seed: int, num_queries: int = 6, dim: int = 6):
    generator = torch.Generator().manual_seed(100 + seed)
    embeddings = torch.randn(num_queries, dim, generator=generator, dtype=torch.float64)
    classes = torch.randint(0, 4, (num_queries,), generator=generator)
    image_index = torch.tensor([0, 0, 2, 3, 3, 3])[:num_queries]  # image 1 of the batch has no query
    lambdas = torch.rand(num_queries, generator=generator, dtype=torch.float64)
    partners = torch.randint(0, num_queries, (num_queries,), generator=generator)
    return embeddings, classes, image_index, lambdas, partners


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_mixup_loss_matches_reference(seed: int) -> None:
    memory, memory_valid, _ = _memory(seed)
    embeddings, classes, image_index, lambdas, partners = _batch(seed)
    classes[0] = 1  # a query whose own class has no memory: only its partner term may remain
    loss = SemanticContrastLoss(0.07, mixup_alpha=8.0)(
        embeddings, classes, image_index, memory, memory_valid, lambdas=lambdas, partners=partners
    )
    expected = reference_mixup_contrast_loss(
        embeddings, classes, image_index, memory, memory_valid, 0.07, lambdas, partners
    )
    assert loss.dim() == 0
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=torch.float64), atol=1e-5, rtol=1e-5)


def test_without_mixup_equals_identity_partners() -> None:
    memory, memory_valid, _ = _memory(7)
    embeddings, classes, image_index, _, _ = _batch(7)
    loss = SemanticContrastLoss(0.1, mixup_alpha=None)(embeddings, classes, image_index, memory, memory_valid)
    ones, identity = torch.ones(6, dtype=torch.float64), torch.arange(6)
    expected = reference_mixup_contrast_loss(
        embeddings, classes, image_index, memory, memory_valid, 0.1, ones, identity
    )
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=torch.float64), atol=1e-5, rtol=1e-5)
    explicit = mixup_contrast_loss(
        embeddings, classes, image_index, memory, memory_valid, 0.1, ones, identity
    )
    torch.testing.assert_close(loss, explicit)


def test_sampled_mixup_is_seeded_and_partners_come_from_images_with_queries() -> None:
    image_index = torch.tensor([4, 4, 1, 1, 1, 7])
    first = sample_mixup(image_index, 8.0, torch.Generator().manual_seed(0))
    second = sample_mixup(image_index, 8.0, torch.Generator().manual_seed(0))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    lambdas, partners = sample_mixup(torch.tensor([4, 4, 1, 1, 1, 7]).repeat(200), 8.0, torch.Generator())
    assert ((lambdas > 0) & (lambdas < 1)).all() and abs(float(lambdas.mean()) - 0.5) < 0.05
    assert partners.min() >= 0 and partners.max() < 1200
    # Images are drawn uniformly: image 7 (one query per repeat) gets about a third of the partners.
    image_of_partner = torch.tensor([4, 4, 1, 1, 1, 7]).repeat(200)[partners]
    assert abs(float((image_of_partner == 7).float().mean()) - 1 / 3) < 0.05
    single = sample_mixup(torch.tensor([3]), 8.0, torch.Generator().manual_seed(1))[1]
    assert single.tolist() == [0]


def test_loss_with_sampled_mixup_is_reproducible() -> None:
    memory, memory_valid, _ = _memory(8)
    embeddings, classes, image_index, _, _ = _batch(8)
    criterion = SemanticContrastLoss()
    first = criterion(
        embeddings, classes, image_index, memory, memory_valid, torch.Generator().manual_seed(3)
    )
    second = criterion(
        embeddings, classes, image_index, memory, memory_valid, torch.Generator().manual_seed(3)
    )
    assert torch.equal(first, second) and torch.isfinite(first)


@pytest.mark.parametrize("num_queries", [0, 3])
def test_nothing_defined_gives_zero_with_graph(num_queries: int) -> None:
    memory = torch.randn(3, 4, 5)
    memory_valid = torch.zeros(3, 4, dtype=torch.bool)
    embeddings = torch.randn(num_queries, 5, requires_grad=True)
    classes = torch.zeros(num_queries, dtype=torch.long)
    image_index = torch.arange(num_queries)
    loss = SemanticContrastLoss()(embeddings, classes, image_index, memory, memory_valid)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    if num_queries:
        assert torch.equal(embeddings.grad, torch.zeros(num_queries, 5))


def test_zero_region_embedding_stays_finite() -> None:
    memory, memory_valid, _ = _memory(9)
    embeddings = torch.zeros(2, 6, dtype=torch.float64, requires_grad=True)  # empty regions pooled to zero
    loss = SemanticContrastLoss()(
        embeddings, torch.tensor([0, 2]), torch.tensor([0, 1]), memory, memory_valid
    )
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(embeddings.grad).all()


def test_bad_arguments_raise() -> None:
    memory, memory_valid, _ = _memory(0)
    with pytest.raises(InvalidSetting, match="temperature: expected a value > 0, got 0.0"):
        SemanticContrastLoss(temperature=0.0)
    with pytest.raises(InvalidSetting, match="mixup_alpha: expected a value > 0 or null, got -1"):
        SemanticContrastLoss(mixup_alpha=-1)
    with pytest.raises(ValueError, match="both lambdas and partners"):
        SemanticContrastLoss()(
            torch.randn(2, 6),
            torch.tensor([0, 0]),
            torch.tensor([0, 1]),
            memory,
            memory_valid,
            lambdas=torch.ones(2),
        )
    with pytest.raises(ValueError, match="memory_valid"):
        per_class_contrast(torch.randn(2, 6), memory, memory_valid[:, :2], 0.1)


# ------------------------------------------------------------------------ the public code's order and floor
def _unequal_norm_batch(seed: int):
    embeddings, classes, image_index, lambdas, partners = _batch(seed)
    norms = torch.tensor([0.2, 5.0, 1.0, 12.0, 0.5, 3.0], dtype=torch.float64)
    partners = (torch.arange(6) + 1 + seed % 5) % 6  # never the query itself
    lambdas = 0.2 + 0.6 * lambdas  # away from 0 and 1: both embeddings count
    return F.normalize(embeddings, dim=-1) * norms[:, None], classes, image_index, lambdas, partners


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mixup_orders_differ_on_unequal_norms_and_each_matches_its_reference(seed: int) -> None:
    memory, memory_valid, _ = _memory(seed)
    embeddings, classes, image_index, lambdas, partners = _unequal_norm_batch(seed)
    batch = (embeddings, classes, image_index, memory, memory_valid)
    normalised_first = SemanticContrastLoss(0.07, mixup_order="normalise_then_mix")(
        *batch, lambdas=lambdas, partners=partners
    )
    mixed_first = SemanticContrastLoss(0.07, mixup_order="mix_then_normalise")(
        *batch, lambdas=lambdas, partners=partners
    )
    expected_normalised_first = reference_mixup_contrast_loss(*batch, 0.07, lambdas, partners)
    expected_mixed_first = reference_release_mixup_contrast_loss(*batch, 0.07, lambdas, partners, None)
    torch.testing.assert_close(normalised_first, torch.tensor(expected_normalised_first, dtype=torch.float64))
    torch.testing.assert_close(mixed_first, expected_mixed_first)
    assert abs(float(normalised_first - mixed_first)) > 0.05 * float(normalised_first)


def test_mixup_orders_agree_when_norms_are_equal() -> None:
    memory, memory_valid, _ = _memory(11)
    embeddings, classes, image_index, lambdas, partners = _unequal_norm_batch(11)
    batch = (3.0 * F.normalize(embeddings, dim=-1), classes, image_index, memory, memory_valid)
    losses = [
        SemanticContrastLoss(0.07, mixup_order=order)(*batch, lambdas=lambdas, partners=partners)
        for order in ("normalise_then_mix", "mix_then_normalise")
    ]
    torch.testing.assert_close(losses[0], losses[1])


def test_denominator_floor_clamps_the_max_shifted_denominator() -> None:
    temperature, floor = 0.07, 1e-4
    query = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    memory = torch.tensor(
        [
            [[1.0, 0.0, 0.0], [-0.9, math.sqrt(0.19), 0.0]],  # class 0: cosines 1 and -0.9 with the query
            [[-0.9, 0.0, math.sqrt(0.19)], [-0.8, 0.6, 0.0]],  # class 1: cosines -0.9 and -0.8
        ],
        dtype=torch.float64,
    )
    memory_valid = torch.ones(2, 2, dtype=torch.bool)
    floored, _ = per_class_contrast(query, memory, memory_valid, temperature, floor)
    exact, _ = per_class_contrast(query, memory, memory_valid, temperature)

    largest = 1.0 / temperature  # the query's best logit over the whole memory
    far_positive, negatives = -0.9 / temperature, [-0.9 / temperature, -0.8 / temperature]
    shifted_denominator = sum(math.exp(s - largest) for s in [far_positive, *negatives])
    assert shifted_denominator < floor  # the far positive's denominator is floored ...
    far_term = -math.log(math.exp(far_positive - largest) / floor)  # ... to -log(e^{s_p - M} / 1e-4)
    best_term = math.log(1.0 + sum(math.exp(s - largest) for s in negatives))  # not floored
    assert float(floored[0, 0]) == pytest.approx((best_term + far_term) / 2, rel=1e-12)
    assert float(exact[0, 0]) == pytest.approx(
        (best_term + math.log(2.0 + math.exp(0.1 / temperature))) / 2, rel=1e-12
    )
    torch.testing.assert_close(floored[0, 1], exact[0, 1])  # class 1: the best entry is its negative


@pytest.mark.parametrize("temperature", [0.07, 0.02])
def test_release_settings_match_the_release_reference_in_value_and_gradient(temperature: float) -> None:
    memory, memory_valid, _ = _memory(12)
    embeddings, classes, image_index, lambdas, partners = _unequal_norm_batch(12)
    embeddings.requires_grad_()
    batch = (embeddings, classes, image_index, memory, memory_valid)
    release = SemanticContrastLoss(temperature, mixup_order="mix_then_normalise", denominator_floor=1e-4)
    loss = release(*batch, lambdas=lambdas, partners=partners)
    expected = reference_release_mixup_contrast_loss(*batch, temperature, lambdas, partners, 1e-4)
    (grad,) = torch.autograd.grad(loss, embeddings)
    (expected_grad,) = torch.autograd.grad(expected, embeddings)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(grad, expected_grad)
    unfloored = reference_release_mixup_contrast_loss(*batch, temperature, lambdas, partners, None)
    if temperature == 0.02:  # at this temperature the floor bites on these embeddings
        assert float(expected.detach()) > float(unfloored.detach()) + 0.1


def test_release_settings_are_validated() -> None:
    with pytest.raises(InvalidSetting, match=r"mixup_order: expected one of \[.*\], got 'mix'"):
        SemanticContrastLoss(mixup_order="mix")
    with pytest.raises(InvalidSetting, match="denominator_floor: expected a value > 0 or null, got 0.0"):
        SemanticContrastLoss(denominator_floor=0.0)
