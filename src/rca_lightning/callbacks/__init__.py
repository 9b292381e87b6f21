from rca_lightning.callbacks.attention_accumulation import (
    AttentionAccumulationCallback,
    attention_seed,
    load_accumulated_attention,
)
from rca_lightning.callbacks.memory_bank import MemoryBankCallback

__all__ = [
    "AttentionAccumulationCallback",
    "MemoryBankCallback",
    "attention_seed",
    "load_accumulated_attention",
]
