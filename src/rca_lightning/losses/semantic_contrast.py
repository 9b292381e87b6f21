"""Semantic contrast: region embeddings against the class queues of the regional memory bank (InfoNCE)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rca_lightning.utils.errors import InvalidSetting

# Where the two region embeddings of a mix-up are L2-normalised: each before mixing (this project), or only
# the mixture of the raw embeddings (the public code).
MIXUP_ORDERS = ("normalise_then_mix", "mix_then_normalise")


def _log_zero(dtype: torch.dtype) -> float:
    # A finite stand-in for log(0): exp() of it is exactly 0 next to any real logit, and unlike -inf it keeps
    # logsumexp gradients finite when a set is empty.
    return torch.finfo(dtype).min / 4


def _check_denominator_floor(denominator_floor: float | None, owner: str) -> None:
    if denominator_floor is not None and not denominator_floor > 0:
        raise ValueError(f"{owner}: denominator_floor must be > 0 or None, got {denominator_floor}")


def per_class_contrast(
    queries: Tensor,
    memory: Tensor,
    memory_valid: Tensor,
    temperature: float,
    denominator_floor: float | None = None,
) -> tuple[Tensor, Tensor]:
    """InfoNCE loss of every query against every class queue, one similarity matmul for all.

    Entry [n, c] is the mean over the valid entries p of class c of
    ``-log(exp(q.p/t) / (exp(q.p/t) + sum_m exp(q.m/t)))``, m running over the valid entries of all other
    classes. Computed as ``softplus(logsumexp_m(q.m/t) - q.p/t)``, so it never overflows; with no negatives
    it is 0. Queries and memory entries are L2-normalised here (a no-op for normalised queries); the memory
    is detached, so gradients reach the queries only. Invalid slots are zeroed before use and never count.

    With a ``denominator_floor`` f, each term is the public code's ``-log(exp(s_p - M) / max(D e^-M, f))``:
    it computes the denominator D shifted by the query's largest logit M over all valid memory entries (a
    constant of the graph there, detached here too) and clamps that at f, i.e. the term becomes
    ``max(log D, M + log f) - s_p``, evaluated in log space. The floor bites only when the positive and
    every negative lie more than ``-log f`` (9.2 for 1e-4) logits below the best-matching entry, which is
    then another entry of the positive's class; a floored term pulls its positive only.

    Args:
        queries: (N, D) query embeddings (L2-normalised).
        memory: (C, L, D) class queues.
        memory_valid: (C, L) bool, which slots hold written entries.
        temperature: InfoNCE temperature t > 0.
        denominator_floor: floor f > 0 of the max-shifted denominator (1e-4 in the public code), or None.

    Returns:
        loss: (N, C) per query and class, in float32 or wider; 0 where undefined.
        defined: (N, C) bool, False where class c has no valid entry (no positives).
    """
    if queries.dim() != 2 or memory.dim() != 3 or queries.shape[1] != memory.shape[2]:
        raise ValueError(
            "per_class_contrast: expected queries (N, D) and memory (C, L, D), "
            f"got {tuple(queries.shape)} and {tuple(memory.shape)}"
        )
    if memory_valid.shape != memory.shape[:2]:
        raise ValueError(
            f"per_class_contrast: memory_valid must be {tuple(memory.shape[:2])}, "
            f"got {tuple(memory_valid.shape)}"
        )
    if not temperature > 0:
        raise ValueError(f"per_class_contrast: temperature must be > 0, got {temperature}")
    _check_denominator_floor(denominator_floor, "per_class_contrast")
    num_queries, num_classes = queries.shape[0], memory.shape[0]
    memory_valid = memory_valid.to(device=queries.device, dtype=torch.bool)
    # Half precision holds neither logits scaled by 1/t nor the log(0) stand-in: compute in float32 or wider.
    queries = queries.to(torch.promote_types(queries.dtype, torch.float32))
    log_zero = _log_zero(queries.dtype)

    queries = F.normalize(queries, dim=-1)  # (N, D)
    keys = F.normalize(memory.detach().to(device=queries.device, dtype=queries.dtype), dim=-1)  # (C, L, D)
    keys = torch.where(memory_valid.unsqueeze(-1), keys, torch.zeros_like(keys))
    with torch.autocast(device_type=queries.device.type, enabled=False):
        logits = torch.einsum("nd,cld->ncl", queries, keys) / temperature  # (N, C, L)

    valid = memory_valid.unsqueeze(0)  # (1, C, L)
    class_log_sums = torch.logsumexp(torch.where(valid, logits, log_zero), dim=2)  # (N, C)
    other_classes = ~torch.eye(num_classes, dtype=torch.bool, device=queries.device)  # (C, C)
    negative_log_sums = torch.logsumexp(
        torch.where(other_classes.unsqueeze(0), class_log_sums.unsqueeze(1), log_zero), dim=2
    )  # (N, C): [n, c] = log sum over valid entries of classes != c

    positive_terms = F.softplus(negative_log_sums.unsqueeze(-1) - logits)  # (N, C, L): log D - s_p
    if denominator_floor is not None:
        largest_logits = torch.where(valid, logits, log_zero).amax(dim=(1, 2)).detach()  # (N,)
        floored_terms = largest_logits[:, None, None] + math.log(denominator_floor) - logits  # (N, C, L)
        positive_terms = torch.maximum(positive_terms, floored_terms)
    positive_terms = torch.where(valid, positive_terms, torch.zeros_like(positive_terms))
    num_positives = memory_valid.sum(dim=1)  # (C,)
    defined = (num_positives > 0).unsqueeze(0).expand(num_queries, num_classes)  # (N, C)
    loss = positive_terms.sum(dim=2) / num_positives.clamp_min(1).to(queries.dtype)  # (N, C)
    return loss, defined


def sample_mixup(
    image_index: Tensor, alpha: float, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Draw the mix-up coefficients and partners of a batch of queries.

    lambda ~ Beta(alpha, alpha) per query; the partner is a uniformly random query of a uniformly random
    image among the images that have queries (possibly the query itself). All draws happen on the CPU from
    one seed taken from ``generator`` (or from the global RNG when None), so results are device-independent.

    Args:
        image_index: (N,) long, batch image of every query.
        alpha: Beta concentration, > 0.
        generator: optional torch.Generator.

    Returns:
        lambdas: (N,) float on ``image_index``'s device.
        partners: (N,) long query indices on ``image_index``'s device.
    """
    if not alpha > 0:
        raise ValueError(f"sample_mixup: mixup_alpha must be > 0 (or None to disable), got {alpha}")
    num_queries, device = image_index.shape[0], image_index.device
    seed_source = torch.default_generator if generator is None else generator
    seed = int(torch.randint(0, 2**62, (1,), generator=seed_source, device=seed_source.device).item())
    with torch.random.fork_rng(devices=[]):
        cpu_generator = torch.default_generator.manual_seed(seed)
        lambdas = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha))).sample(
            (num_queries,)
        )  # (N,)
        image_draws = torch.rand(num_queries, generator=cpu_generator, dtype=torch.float64)  # (N,)
        query_draws = torch.rand(num_queries, generator=cpu_generator, dtype=torch.float64)  # (N,)

    _, image_slot, queries_per_image = torch.unique(image_index, return_inverse=True, return_counts=True)
    num_images = queries_per_image.shape[0]
    by_image = torch.argsort(image_slot, stable=True)  # (N,) queries grouped by image
    image_starts = torch.cumsum(queries_per_image, dim=0) - queries_per_image  # (U,)
    chosen_image = (image_draws.to(device) * num_images).long().clamp(max=max(num_images - 1, 0))  # (N,)
    chosen_count = queries_per_image[chosen_image]  # (N,)
    chosen_rank = torch.minimum((query_draws.to(device) * chosen_count).long(), chosen_count - 1)  # (N,)
    partners = by_image[image_starts[chosen_image] + chosen_rank]  # (N,)
    return lambdas.to(device), partners


def mixup_contrast_loss(
    region_embeddings: Tensor,
    classes: Tensor,
    image_index: Tensor,
    memory: Tensor,
    memory_valid: Tensor,
    temperature: float,
    lambdas: Tensor,
    partners: Tensor,
    mixup_order: str = "normalise_then_mix",
    denominator_floor: float | None = None,
) -> Tensor:
    """Semantic contrast loss of a batch for given mix-up coefficients and partners.

    Query n (class a) is mixed with its partner (class b): ``mixed = normalise(l*q_n + (1-l)*q_partner)``
    with q = normalise(region embedding) (``"normalise_then_mix"``) or q = the raw region embedding
    (``"mix_then_normalise"``, the public code's, where the embedding of larger norm weighs more than its
    coefficient says); its loss is ``l*L(mixed, a) + (1-l)*L(mixed, b)`` where a term whose
    class has no valid memory entry is dropped. The losses are averaged over each image's queries that keep
    at least one term, then summed over images. Zero, still attached to the graph, when nothing is defined.

    Args:
        region_embeddings: (N, D) region embeddings (contrast queries before normalisation).
        classes: (N,) long class of every query.
        image_index: (N,) long batch image of every query.
        memory: (C, L, D) class queues.
        memory_valid: (C, L) bool.
        temperature: InfoNCE temperature.
        lambdas: (N,) mix-up coefficients in [0, 1] (1 = no mix-up).
        partners: (N,) long partner query indices (``arange(N)`` = no mix-up).
        mixup_order: ``"normalise_then_mix"`` or ``"mix_then_normalise"``.
        denominator_floor: see ``per_class_contrast``.

    Returns:
        Scalar loss.
    """
    if mixup_order not in MIXUP_ORDERS:
        raise ValueError(f"mixup_order: expected one of {list(MIXUP_ORDERS)}, got '{mixup_order}'")
    num_queries = region_embeddings.shape[0]
    for name, tensor in (
        ("classes", classes),
        ("image_index", image_index),
        ("lambdas", lambdas),
        ("partners", partners),
    ):
        if tensor.shape != (num_queries,):
            raise ValueError(
                f"mixup_contrast_loss: {name} must be ({num_queries},), got {tuple(tensor.shape)}"
            )
    device = region_embeddings.device
    classes, image_index, partners = (
        t.to(device=device, dtype=torch.long) for t in (classes, image_index, partners)
    )
    lambdas = lambdas.to(device=device, dtype=region_embeddings.dtype)  # (N,)

    if mixup_order == "normalise_then_mix":
        embeddings = F.normalize(region_embeddings, dim=-1)  # (N, D)
    else:
        embeddings = region_embeddings  # (N, D)
    mix = lambdas.unsqueeze(-1)  # (N, 1)
    mixed_queries = F.normalize(mix * embeddings + (1.0 - mix) * embeddings[partners], dim=-1)  # (N, D)
    loss_table, defined = per_class_contrast(
        mixed_queries, memory, memory_valid, temperature, denominator_floor
    )  # (N, C)

    query_ids = torch.arange(num_queries, device=device)  # (N,)
    partner_classes = classes[partners]  # (N,)
    own_defined = defined[query_ids, classes]  # (N,)
    partner_defined = defined[query_ids, partner_classes]  # (N,)
    own_term = torch.where(own_defined, lambdas * loss_table[query_ids, classes], 0.0)
    partner_term = torch.where(partner_defined, (1.0 - lambdas) * loss_table[query_ids, partner_classes], 0.0)
    query_losses = own_term + partner_term  # (N,)
    contributes = (own_defined | partner_defined).to(query_losses.dtype)  # (N,)

    unique_images, image_slot = torch.unique(image_index, return_inverse=True)  # (U,), (N,) in [0, U)
    num_images = unique_images.shape[0]
    image_sums = query_losses.new_zeros(num_images).index_add(0, image_slot, query_losses)  # (U,)
    image_counts = query_losses.new_zeros(num_images).index_add(0, image_slot, contributes)  # (U,)
    return (image_sums / image_counts.clamp_min(1.0)).sum()


class SemanticContrastLoss(nn.Module):
    """RCA semantic contrast loss with region mix-up.

    Args:
        temperature: InfoNCE temperature (0.07 in the paper).
        mixup_alpha: Beta(alpha, alpha) concentration of the mix-up coefficient (8 in the paper);
            None disables mix-up.
        mixup_order: ``"normalise_then_mix"`` (each region embedding L2-normalised, then mixed) or
            ``"mix_then_normalise"`` (the raw embeddings mixed, the mixture normalised: the public code).
        denominator_floor: floor of each InfoNCE denominator, shifted by the query's largest logit, before
            the log (1e-4 in the public code; see ``per_class_contrast``), or None for the exact loss.
    """

    def __init__(
        self,
        temperature: float = 0.07,
        mixup_alpha: float | None = 8.0,
        mixup_order: str = "normalise_then_mix",
        denominator_floor: float | None = None,
    ) -> None:
        super().__init__()
        if not temperature > 0:
            raise InvalidSetting(f"temperature: expected a value > 0, got {temperature}")
        if mixup_alpha is not None and not mixup_alpha > 0:
            raise InvalidSetting(f"mixup_alpha: expected a value > 0 or null, got {mixup_alpha}")
        if mixup_order not in MIXUP_ORDERS:
            raise InvalidSetting(f"mixup_order: expected one of {list(MIXUP_ORDERS)}, got '{mixup_order}'")
        if denominator_floor is not None and not denominator_floor > 0:
            raise InvalidSetting(f"denominator_floor: expected a value > 0 or null, got {denominator_floor}")
        self.temperature = temperature
        self.mixup_alpha = mixup_alpha
        self.mixup_order = mixup_order
        self.denominator_floor = denominator_floor

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, mixup_alpha={self.mixup_alpha}, "
            f"mixup_order={self.mixup_order}, denominator_floor={self.denominator_floor}"
        )

    def forward(
        self,
        region_embeddings: Tensor,
        classes: Tensor,
        image_index: Tensor,
        memory: Tensor,
        memory_valid: Tensor,
        generator: torch.Generator | None = None,
        lambdas: Tensor | None = None,
        partners: Tensor | None = None,
    ) -> Tensor:
        """Contrast loss of a batch of region embeddings against the memory bank.

        Args:
            region_embeddings: (N, D) one embedding per (image, present class) region.
            classes: (N,) long class of every embedding.
            image_index: (N,) long batch image of every embedding.
            memory: (C, L, D) class queues (not differentiated).
            memory_valid: (C, L) bool written slots.
            generator: randomness of the mix-up draws.
            lambdas: optional (N,) explicit mix-up coefficients (given together with ``partners``; for tests
                and benchmarks).
            partners: optional (N,) explicit partner indices.

        Returns:
            Scalar loss (see ``mixup_contrast_loss``).
        """
        if (lambdas is None) != (partners is None):
            raise ValueError("SemanticContrastLoss: give both lambdas and partners, or neither")
        if lambdas is None or partners is None:
            num_queries = region_embeddings.shape[0]
            if self.mixup_alpha is None:
                lambdas = region_embeddings.new_ones(num_queries)
                partners = torch.arange(num_queries, device=region_embeddings.device)
            else:
                lambdas, partners = sample_mixup(image_index, self.mixup_alpha, generator)
        return mixup_contrast_loss(
            region_embeddings,
            classes,
            image_index,
            memory,
            memory_valid,
            self.temperature,
            lambdas,
            partners,
            self.mixup_order,
            self.denominator_floor,
        )
