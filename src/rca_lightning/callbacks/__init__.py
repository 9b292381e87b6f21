"""Lightning callbacks that drive life cycles: the memory bank's, the online attention accumulation, the
validation image logger, the generator states. Imports pseudo, imaging and utils."""

from rca_lightning.callbacks.attention_accumulation import AttentionAccumulationCallback
from rca_lightning.callbacks.cam_image_logger import CAMImageLoggerCallback
from rca_lightning.callbacks.memory_bank import MemoryBankCallback
from rca_lightning.callbacks.rng_state import RNGStateCallback

__all__ = [
    "AttentionAccumulationCallback",
    "CAMImageLoggerCallback",
    "MemoryBankCallback",
    "RNGStateCallback",
]
