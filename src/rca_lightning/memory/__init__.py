"""RCA's regional memory bank: the bank module (a queue of region embeddings and their prototypes),
region masks and masked pooling, batched k-means. Imports only ``utils``."""

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
    "KMEANS_INITS",
    "RegionalMemoryBank",
    "batched_kmeans",
    "kmeans_inertia",
    "kmeans_init_indices",
    "kmeans_plusplus_indices",
    "masked_average_pool",
    "region_masks",
]
