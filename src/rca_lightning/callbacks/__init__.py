from rca_lightning.callbacks.attention_accumulation import (
    AttentionAccumulationCallback,
    attention_seed,
    load_accumulated_attention,
)
from rca_lightning.callbacks.cam_image_logger import CAMImageLoggerCallback
from rca_lightning.callbacks.memory_bank import MemoryBankCallback
from rca_lightning.callbacks.rng_state import RNGStateCallback

__all__ = [
    "AttentionAccumulationCallback",
    "CAMImageLoggerCallback",
    "MemoryBankCallback",
    "RNGStateCallback",
    "attention_seed",
    "load_accumulated_attention",
]
