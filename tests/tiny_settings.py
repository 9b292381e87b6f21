"""The overrides that shrink the packaged configs to a seconds-long CPU run."""

# A built-in dataset small enough for seconds-long runs; shared by the tests of one session.
TINY_DATA_OVERRIDES = [
    "data.generator.num_train=48",
    "data.generator.num_val=16",
    "data.generator.image_size=64",
    "data.batch_size=8",
    "data.num_workers=0",
]
TINY_MODEL_OVERRIDES = [
    "model.net.head_width=16",
    "model.net.projection_dim=16",
    "model.net.attention_dim=16",
    "model.memory_bank.queue_length=32",
    "model.memory_bank.num_prototypes=3",
]
