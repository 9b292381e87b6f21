"""Regional memory bank, region masks and pooling, batched k-means, and the attention accumulation's
per-image store."""

from rca_lightning.memory.attention_store import AttentionStore, load_accumulated_attention
from rca_lightning.memory.kmeans import (
    KMEANS_INITS,
    batched_kmeans,
    kmeans_inertia,
    kmeans_init_indices,
    kmeans_plusplus_indices,
)
from rca_lightning.memory.memory_bank import RegionalMemoryBank
from rca_lightning.memory.region_pooling import masked_average_pool, region_masks

__all__ = [
    "AttentionStore",
    "KMEANS_INITS",
    "RegionalMemoryBank",
    "batched_kmeans",
    "kmeans_inertia",
    "kmeans_init_indices",
    "kmeans_plusplus_indices",
    "load_accumulated_attention",
    "masked_average_pool",
    "region_masks",
]
