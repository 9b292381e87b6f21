from rca_lightning.callbacks.memory_bank import MemoryBankCallback

__all__ = ["MemoryBankCallback"]
