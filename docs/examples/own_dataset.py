"""RCA in your own Lightning project: ``RCALitModule`` built from the packaged configs, trained on your own
tagged images with a plain ``lightning.Trainer``.

    python docs/examples/own_dataset.py

A dataset of tagged images gives each item two tensors, the only ones ``RCALitModule.training_step`` reads:
``image``, (3, H, W) float32, normalised, and ``labels``, (C,) float32, 1.0 for each class the image shows
and 0.0 for the others. Here the images are random: 16 images of 64 px, 3 classes, one epoch on the CPU.
"""

from pathlib import Path

import lightning
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.utils.data import DataLoader, Dataset

import rca_lightning
from rca_lightning import RCALitModule
from rca_lightning.utils.resolvers import register_resolvers

CLASS_NAMES = ["cat", "dog", "bird"]
IMAGE_SIZE = 64
NUM_IMAGES = 16


class TaggedImages(Dataset):
    """Images with image-level tags only: no mask, no box.

    Args:
        num_images: N.
        image_size: side H = W of the images.
        num_classes: C.
        seed: random seed of the images and their tags.
    """

    def __init__(self, num_images: int, image_size: int, num_classes: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.randn(num_images, 3, image_size, image_size, generator=generator)  # (N, 3, H, W)
        self.labels = (torch.rand(num_images, num_classes, generator=generator) > 0.5).float()  # (N, C)
        self.labels[self.labels.sum(dim=1) == 0, 0] = 1.0  # every image shows at least one class

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[index], "labels": self.labels[index]}


def build_rca_module(class_names: list[str]) -> RCALitModule:
    """The ``model`` node of ``rca-train``'s config (``experiment=synthetic``: full RCA, a resnet10t at output
    stride 8 from scratch, AdamW), sized down for a CPU, for ``class_names``; built as ``rca-train`` builds
    it."""
    register_resolvers()  # ${len:...} and the other resolvers the packaged configs use
    config_dir = Path(rca_lightning.__file__).parent / "conf"
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"data.class_names=[{','.join(class_names)}]",  # the model's classes follow the data's
                "model.net.head_width=16",
                "model.net.projection_dim=16",
                "model.net.attention_dim=16",
                "model.memory_bank.queue_length=32",
                "model.memory_bank.num_prototypes=3",
                "model.contrast_start_epoch=0",  # the contrast term from the first epoch (default: 2)
            ],
        )
    return instantiate(cfg.model)


def main() -> None:
    lightning.seed_everything(0, verbose=False)
    module = build_rca_module(CLASS_NAMES)
    dataset = TaggedImages(NUM_IMAGES, IMAGE_SIZE, len(CLASS_NAMES))
    loader = DataLoader(dataset, batch_size=4, shuffle=True)
    trainer = lightning.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False)
    # The module attaches its memory-bank callback itself (configure_callbacks): nothing to add here.
    trainer.fit(module, train_dataloaders=loader)
    loss = float(trainer.callback_metrics["train/loss_epoch"])
    print(
        f"{type(module).__name__}: {trainer.global_step} steps on {len(dataset)} tagged images "
        f"of {len(CLASS_NAMES)} classes, epoch train/loss {loss:.4f}"
    )


if __name__ == "__main__":
    main()
