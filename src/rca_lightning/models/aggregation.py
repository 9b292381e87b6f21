"""Semantic aggregation: every pixel attends over the class prototypes of the memory bank."""

from __future__ import annotations

import math

import torch
from torch import nn

from rca_lightning.utils.errors import InvalidSetting

ATTENTION_MODES = ("softmax", "linear")


class SemanticAggregation(nn.Module):
    """Fuse dataset-level context from class prototypes into a feature map.

    query = conv1x1(features) -> A channels; key, value = Linear(prototypes) -> A.
    ``"softmax"``: weights = softmax over the valid prototypes of q.k / sqrt(A).
    ``"linear"``: the public code's weights = q.k * (C/K), no softmax; invalid prototypes get weight 0.
    context = conv1x1(weights . value) -> F channels; fused = conv1x1(concat[features, context]) -> F.
    Without prototypes (``None``) or with no valid one, context is zeros; the fuse conv still runs, and
    the unused attention parameters are kept in the graph with a zero contribution, so every parameter
    gets a (zero) gradient in every step (DDP works without ``find_unused_parameters``).

    Args:
        in_channels: channels F of the feature map.
        prototype_dim: dimension D of the prototypes.
        attention_dim: dimension A of queries, keys and values.
        attention: ``"softmax"`` or ``"linear"``.
    """

    def __init__(
        self, in_channels: int, prototype_dim: int, attention_dim: int, attention: str = "softmax"
    ) -> None:
        super().__init__()
        if attention not in ATTENTION_MODES:
            raise InvalidSetting(f"attention: expected one of {list(ATTENTION_MODES)}, got '{attention}'")
        self.attention = attention
        self.prototype_dim = prototype_dim
        self.attention_dim = attention_dim
        self.query = nn.Conv2d(in_channels, attention_dim, kernel_size=1)
        self.key = nn.Linear(prototype_dim, attention_dim)
        self.value = nn.Linear(prototype_dim, attention_dim)
        self.context = nn.Conv2d(attention_dim, in_channels, kernel_size=1)
        self.fuse = nn.Conv2d(2 * in_channels, in_channels, kernel_size=1)

    def forward(
        self,
        features: torch.Tensor,
        prototypes: torch.Tensor | None = None,
        prototype_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend over the prototypes and fuse the context into the features.

        Args:
            features: (B, F, h, w) feature map.
            prototypes: (C, K, D) class prototypes, or None.
            prototype_valid: (C, K) bool, which prototypes exist; None means all of them.

        Returns:
            fused: (B, F, h, w).
        """
        if prototypes is not None:
            prototype_valid = self._check_prototypes(prototypes, prototype_valid)
        if prototypes is None or not bool(prototype_valid.any()):
            context = features.new_zeros(features.shape) + self._zero_from_attention_parameters()
        else:
            context = self._attend(features, prototypes, prototype_valid)  # (B, F, h, w)
        return self.fuse(torch.cat([features, context], dim=1))  # (B, F, h, w)

    def _attend(
        self, features: torch.Tensor, prototypes: torch.Tensor, prototype_valid: torch.Tensor
    ) -> torch.Tensor:
        num_classes, num_prototypes, _ = prototypes.shape
        batch, _, height, width = features.shape
        flat_prototypes = prototypes.reshape(num_classes * num_prototypes, -1).to(features.dtype)  # (N, D)
        valid = prototype_valid.reshape(1, 1, -1)  # (1, 1, N)
        queries = self.query(features).flatten(2).transpose(1, 2)  # (B, hw, A)
        keys = self.key(flat_prototypes)  # (N, A)
        values = self.value(flat_prototypes)  # (N, A)
        similarity = torch.einsum("bpa,na->bpn", queries, keys)  # (B, hw, N)
        if self.attention == "softmax":
            similarity = similarity / math.sqrt(self.attention_dim)
            weights = similarity.masked_fill(~valid, float("-inf")).softmax(dim=-1)
        else:
            weights = (similarity * (num_classes / num_prototypes)).masked_fill(~valid, 0.0)
        attended = torch.einsum("bpn,na->bap", weights, values)  # (B, A, hw)
        return self.context(attended.reshape(batch, self.attention_dim, height, width))  # (B, F, h, w)

    def _zero_from_attention_parameters(self) -> torch.Tensor:
        attention_modules = (self.query, self.key, self.value, self.context)
        return sum(parameter.sum() for module in attention_modules for parameter in module.parameters()) * 0.0

    def _check_prototypes(
        self, prototypes: torch.Tensor, prototype_valid: torch.Tensor | None
    ) -> torch.Tensor:
        if prototypes.dim() != 3 or prototypes.shape[-1] != self.prototype_dim:
            raise ValueError(
                f"prototypes: expected shape (C, K, {self.prototype_dim}), got {tuple(prototypes.shape)}"
            )
        if prototype_valid is None:
            return torch.ones(prototypes.shape[:2], dtype=torch.bool, device=prototypes.device)
        if prototype_valid.shape != prototypes.shape[:2]:
            raise ValueError(
                f"prototype_valid: expected shape {tuple(prototypes.shape[:2])} like prototypes, "
                f"got {tuple(prototype_valid.shape)}"
            )
        return prototype_valid.bool()
