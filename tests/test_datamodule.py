"""VOCDataModule: generation in prepare_data, datasets in setup, loader batches, worker processes."""

import pickle
from pathlib import Path

import pytest
import torch

from rca_lightning.data import SyntheticVOCGenerator, VOCDataModule, VOCSegmentationDataset
from rca_lightning.data.synthetic import COMPLETE_MARKER
from rca_lightning.utils.errors import InvalidSetting, MissingInput

CLASSES = ("disc", "square", "triangle")


def make_datamodule(root: Path, **overrides) -> VOCDataModule:
    settings = dict(
        root=root,
        class_names=CLASSES,
        image_size=48,
        batch_size=4,
        generator=SyntheticVOCGenerator(CLASSES, num_train=10, num_val=6, image_size=64, seed=2),
    )
    settings.update(overrides)
    return VOCDataModule(**settings)


@pytest.fixture(scope="module")
def prepared_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("datamodule") / "synthetic"
    make_datamodule(root).prepare_data()
    return root


def test_prepare_data_generates_once_and_setup_builds_datasets(tmp_path):
    root = tmp_path / "synthetic"
    datamodule = make_datamodule(root)
    assert datamodule.num_classes == 3
    datamodule.prepare_data()
    assert (root / COMPLETE_MARKER).is_file()
    assert datamodule.train_dataset is None  # prepare_data sets no state
    stamp = (root / COMPLETE_MARKER).stat().st_mtime_ns
    datamodule.prepare_data()  # complete: nothing rewritten
    assert (root / COMPLETE_MARKER).stat().st_mtime_ns == stamp
    datamodule.setup("fit")
    assert isinstance(datamodule.train_dataset, VOCSegmentationDataset)
    assert len(datamodule.train_dataset) == 10 and len(datamodule.val_dataset) == 6


def test_loaders_yield_contract_batches(prepared_root):
    datamodule = make_datamodule(prepared_root)
    datamodule.setup("fit")
    train_batches = list(datamodule.train_dataloader())
    assert len(train_batches) == 2  # 10 images, batch 4, drop_last
    batch = train_batches[0]
    assert batch["image"].shape == (4, 3, 48, 48) and batch["image"].dtype == torch.float32
    assert batch["labels"].shape == (4, 3) and batch["labels"].dtype == torch.float32
    assert batch["mask"].shape == (4, 48, 48) and batch["mask"].dtype == torch.int64
    assert len(batch["image_id"]) == 4 and all(isinstance(i, str) for i in batch["image_id"])
    assert (batch["labels"].sum(dim=1) >= 1).all()

    val_batches = list(datamodule.val_dataloader())
    assert [len(b["image_id"]) for b in val_batches] == [4, 2]  # no drop_last, no shuffle
    assert [i for b in val_batches for i in b["image_id"]] == datamodule.val_dataset.image_ids
    assert val_batches[0]["image"].shape == (4, 3, 48, 48)

    predicted = [i for b in datamodule.predict_dataloader() for i in b["image_id"]]
    assert predicted == datamodule.val_dataset.image_ids
    predicted_train = [i for b in datamodule.predict_dataloader("train") for i in b["image_id"]]
    assert predicted_train == datamodule.train_dataset.image_ids


def test_train_loader_keeps_small_last_batch_when_dataset_is_smaller_than_batch(prepared_root):
    datamodule = make_datamodule(prepared_root, batch_size=16)
    datamodule.setup("fit")
    assert [len(b["image_id"]) for b in datamodule.train_dataloader()] == [10]


def test_worker_processes_and_pickling(prepared_root):
    datamodule = make_datamodule(prepared_root, num_workers=2)
    datamodule.setup("fit")
    clone = pickle.loads(pickle.dumps(datamodule))
    assert clone.class_names == CLASSES and len(clone.train_dataset) == 10
    ids = [i for b in datamodule.val_dataloader() for i in b["image_id"]]
    assert ids == datamodule.val_dataset.image_ids


def test_class_names_file_mismatch_raises_naming_the_file(prepared_root):
    datamodule = make_datamodule(prepared_root, class_names=("square", "disc", "triangle"), generator=None)
    with pytest.raises(InvalidSetting, match=r"class_names\.txt lists \['disc', 'square', 'triangle'\]"):
        datamodule.prepare_data()
    with pytest.raises(InvalidSetting, match=r"class_names\.txt"):
        datamodule.setup("fit")


def test_generator_with_other_classes_is_rejected(tmp_path):
    with pytest.raises(InvalidSetting, match="generator.class_names"):
        make_datamodule(tmp_path, generator=SyntheticVOCGenerator(("disc", "ring")))


def test_missing_root_without_generator_names_the_root(tmp_path):
    datamodule = make_datamodule(tmp_path / "absent", generator=None)
    with pytest.raises(MissingInput, match=f"data.root={tmp_path / 'absent'} not found"):
        datamodule.prepare_data()


def _augmented_epoch(root: Path, seed: int, num_workers: int) -> torch.Tensor:
    datamodule = make_datamodule(root, num_workers=num_workers)
    datamodule.setup("fit")
    torch.manual_seed(seed)  # what seed_everything sets; the loader derives the workers' seeds from it
    return torch.cat([batch["image"] for batch in datamodule.train_dataloader()])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_augmentation_repeats_from_the_torch_seed(prepared_root, num_workers):
    first = _augmented_epoch(prepared_root, seed=5, num_workers=num_workers)
    assert torch.equal(first, _augmented_epoch(prepared_root, seed=5, num_workers=num_workers))
    assert not torch.equal(first, _augmented_epoch(prepared_root, seed=6, num_workers=num_workers))


# ------------------------------------------------------------------------------ the training loader's order
def _epoch_ids(loader, epoch: int) -> list[str]:
    loader.sampler.set_epoch(epoch)  # what Lightning does at every epoch start
    return [image_id for batch in loader for image_id in batch["image_id"]]


def test_shuffle_off_keeps_the_split_order_every_epoch(prepared_root):
    # The release's loader (shuffle=False): every epoch the split file's order, cut into full batches.
    datamodule = make_datamodule(prepared_root, shuffle=False)
    datamodule.setup("fit")
    in_order = datamodule.train_dataset.image_ids[:8]  # 10 images, batch 4, drop_last
    loader = datamodule.train_dataloader()
    assert _epoch_ids(loader, 0) == _epoch_ids(loader, 1) == in_order
    shuffled = make_datamodule(prepared_root)
    shuffled.setup("fit")
    loader = shuffled.train_dataloader()
    first, second = _epoch_ids(loader, 0), _epoch_ids(loader, 1)
    assert first != in_order and first != second  # by (seed, epoch): fixed for this seed, checked here


@pytest.mark.parametrize("shuffle", [False, True])
def test_a_loader_resumed_mid_epoch_continues_with_the_unseen_batches(prepared_root, shuffle):
    datamodule = make_datamodule(prepared_root, batch_size=2, shuffle=shuffle)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    loader.sampler.set_epoch(1)
    uninterrupted = [batch["image_id"] for batch in loader]
    loader = datamodule.train_dataloader()
    loader.sampler.set_epoch(1)
    iterator = iter(loader)
    seen = [next(iterator)["image_id"] for _ in range(2)]
    state = loader.state_dict()  # what a mid-epoch checkpoint stores
    resumed = datamodule.train_dataloader()
    resumed.sampler.set_epoch(1)
    resumed.load_state_dict(state)
    assert seen + [batch["image_id"] for batch in resumed] == uninterrupted


@pytest.mark.parametrize("value", ["false", 0, None])
def test_shuffle_must_be_a_bool(prepared_root, value):
    with pytest.raises(InvalidSetting) as error:
        make_datamodule(prepared_root, shuffle=value)
    assert str(error.value) == f"data.shuffle={value!r}: expected true or false"
