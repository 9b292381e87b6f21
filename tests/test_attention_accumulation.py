"""Online attention accumulation: crop windows, paste-back, the accumulation rules, the file, a real fit."""

import json
import warnings

import albumentations as A
import lightning as L
import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from rca_lightning.callbacks import AttentionAccumulationCallback, MemoryBankCallback
from rca_lightning.callbacks.attention_accumulation import normalise_attention
from rca_lightning.data import build_train_transform
from rca_lightning.data.transforms import crop_window
from rca_lightning.imaging.crop_grid import paste_crops_into_image_grid
from rca_lightning.pseudo.attention_store import (
    ATTENTION_FILE,
    INDEX_FILE,
    WRITTEN_FILE,
    load_accumulated_attention,
)
from rca_lightning.pseudo.seed_sources import attention_maps
from rca_lightning.utils.errors import InvalidData, InvalidSetting, MissingInput
from tests.references import reference_accumulate, reference_paste_crop

NUM_IMAGES, NUM_CLASSES, RESOLUTION = 7, 3, 8
IMAGE_IDS = [f"img_{n}" for n in range(NUM_IMAGES)]
CLASS_NAMES = ["disc", "square", "ring"]


# ------------------------------------------------------------------------------------------------- helpers
def random_boxes(generator: torch.Generator, count: int) -> torch.Tensor:
    """(count, 4) windows of width/height 0.4..1.6 placed so they may reach outside the image."""
    size = 0.4 + 1.2 * torch.rand(count, 2, generator=generator)
    corner = -0.3 + (1.3 - size * 0.5) * torch.rand(count, 2, generator=generator)
    return torch.cat([corner, corner + size], dim=1)


def random_steps(seed: int, num_epochs: int = 3, batch_size: int = 3) -> list[list[dict]]:
    """Per epoch, batches of random maps, scores, tags and crops covering every image once."""
    generator = torch.Generator().manual_seed(seed)
    epochs = []
    for _ in range(num_epochs):
        order = torch.randperm(NUM_IMAGES, generator=generator)
        batches = []
        for start in range(0, NUM_IMAGES, batch_size):
            indices = order[start : start + batch_size]
            count = len(indices)
            batches.append(
                {
                    "indices": indices,
                    "cams": torch.randn(count, NUM_CLASSES, 5, 6, generator=generator),
                    "logits": 3.0 * torch.randn(count, NUM_CLASSES, generator=generator),
                    "labels": (torch.rand(count, NUM_CLASSES, generator=generator) < 0.6).float(),
                    "crop_boxes": random_boxes(generator, count),
                    "flipped": torch.rand(count, generator=generator) < 0.5,
                }
            )
        epochs.append(batches)
    return epochs


def regroup(epoch: list[dict], seed: int, batch_size: int) -> list[dict]:
    """The same images of an epoch, in another order and other batches."""
    items = [
        {key: value[b] for key, value in batch.items()}
        for batch in epoch
        for b in range(len(batch["indices"]))
    ]
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed)).tolist()
    items = [items[i] for i in order]
    return [
        {key: torch.stack([item[key] for item in items[start : start + batch_size]]) for key in items[0]}
        for start in range(0, len(items), batch_size)
    ]


def make_callback(tmp_path, name="run", create=True, **settings) -> AttentionAccumulationCallback:
    callback = AttentionAccumulationCallback(tmp_path / name, resolution=RESOLUTION, **settings)
    if create:
        callback.create_storage(IMAGE_IDS, CLASS_NAMES)
    return callback


def feed(callback: AttentionAccumulationCallback, epochs: list[list[dict]]) -> None:
    for number, batches in enumerate(epochs):
        for batch in batches:
            callback.accumulate(batch, write_missing=number == len(epochs) - 1)
        callback.flush()


def stored(directory) -> tuple[np.ndarray, np.ndarray]:
    return np.load(directory / ATTENTION_FILE), np.load(directory / WRITTEN_FILE)


# ------------------------------------------------------------------------------------- crop window (data)
def smooth_image(height: int, width: int) -> np.ndarray:
    """Channel 0 rises left to right, channel 1 top to bottom (linear in pixel-centre coordinates)."""
    across = (np.arange(width) + 0.5) / width
    down = (np.arange(height) + 0.5) / height
    image = np.full((height, width, 3), 128.0)
    image[..., 0] = 40 + 180 * across[None, :]
    image[..., 1] = 40 + 180 * down[:, None]
    return np.round(image).astype(np.uint8)


def test_train_crop_pasted_back_lands_in_place():
    height, width, crop, grid = 48, 80, 32, 16
    image = smooth_image(height, width)
    mask = np.zeros((height, width), np.uint8)
    transform = build_train_transform(
        crop, scale_range=(0.5, 1.6), color_jitter=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)
    )
    centres = (torch.arange(grid) + 0.5) / grid
    across, down = centres.expand(grid, grid), centres[:, None].expand(grid, grid)  # (S, S) each
    expected = (40 + 180 * torch.stack([across, down])) / 255.0  # (2, S, S) the maps at grid centres
    seen_flipped = seen_unflipped = seen_padding = False
    for seed in range(40):
        transform.set_random_seed(seed)
        out = transform(image=image, mask=mask)
        box, flipped = crop_window(out["applied_transforms"])
        seen_flipped |= flipped
        seen_unflipped |= not flipped
        seen_padding |= bool((box[:2] < 0).any() or (box[2:] > 1).any())
        crop_maps = out["image"][None, :2]  # (1, 2, crop, crop): the crop of the known map
        pasted = paste_crops_into_image_grid(
            crop_maps, torch.from_numpy(box)[None], torch.tensor([flipped]), grid
        )
        # Grid pixels at least 1.5 crop pixels inside the window and the image (where bilinear
        # sampling mixes in the crop's border or padding).
        x0, y0, x1, y1 = box.tolist()
        margin_x, margin_y = 1.5 * (x1 - x0) / crop, 1.5 * (y1 - y0) / crop
        inner = (across > max(x0, 0) + margin_x) & (across < min(x1, 1) - margin_x)
        inner &= (down > max(y0, 0) + margin_y) & (down < min(y1, 1) - margin_y)
        assert inner.any(), seed
        error = (pasted[0] - expected).abs()[:, inner]
        assert error.max() < 0.02, (seed, box, flipped, float(error.max()))
        outside = ~((across >= x0) & (across <= x1) & (down >= y0) & (down <= y1))
        assert (pasted[0][:, outside] == 0).all()
    assert seen_flipped and seen_unflipped and seen_padding


def test_crop_box_of_padded_image_matches_the_mask_padding():
    image, mask = smooth_image(32, 32), np.ones((32, 32), np.uint8)
    transform = build_train_transform(64, scale_range=(0.5, 0.5), hflip=False, color_jitter=None)
    for seed in range(5):
        transform.set_random_seed(seed)
        out = transform(image=image, mask=mask)
        box, flipped = crop_window(out["applied_transforms"])
        assert not flipped
        np.testing.assert_allclose(box[2:] - box[:2], [2.0, 2.0])  # a 32 px image in a 64 px canvas
        columns = np.nonzero((out["mask"].numpy() == 1).any(axis=0))[0]
        rows = np.nonzero((out["mask"].numpy() == 1).any(axis=1))[0]
        # The image occupies [-x0, 1 - x0] / width of the canvas.
        assert columns[0] == round(-box[0] / 2 * 64) and columns[-1] + 1 == round((1 - box[0]) / 2 * 64)
        assert rows[0] == round(-box[1] / 2 * 64) and rows[-1] + 1 == round((1 - box[1]) / 2 * 64)


def test_crop_window_rejects_steps_it_cannot_follow():
    transform = A.Compose([A.VerticalFlip(p=1.0)], save_applied_params=True)
    out = transform(image=np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="VerticalFlip"):
        crop_window(out["applied_transforms"])


def test_dataset_items_report_index_and_crop(compose_train_config):
    datamodule = instantiate(compose_train_config().data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    train_item = datamodule.train_dataset[5]
    assert train_item["index"] == 5 and train_item["crop_box"].dtype == torch.float32
    assert train_item["crop_box"].shape == (4,) and isinstance(train_item["flipped"], bool)
    assert (train_item["crop_box"][2:] > train_item["crop_box"][:2]).all()
    val_item = datamodule.val_dataset[3]
    assert val_item["index"] == 3 and val_item["flipped"] is False
    assert val_item["crop_box"].tolist() == [0.0, 0.0, 1.0, 1.0]
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["index"].dtype == torch.int64 and batch["flipped"].dtype == torch.bool
    assert batch["crop_box"].shape == (datamodule.batch_size, 4)


# --------------------------------------------------------------------------------------- numerical pieces
def test_paste_matches_reference():
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(4, 2, 5, 7, generator=generator)
    boxes = random_boxes(generator, 4)
    flipped = torch.tensor([False, True, True, False])
    pasted = paste_crops_into_image_grid(maps, boxes, flipped, 9)
    assert pasted.shape == (4, 2, 9, 9)
    for b in range(4):
        for c in range(2):
            expected = torch.tensor(reference_paste_crop(maps[b, c], boxes[b].tolist(), bool(flipped[b]), 9))
            torch.testing.assert_close(pasted[b, c], expected.float(), atol=1e-5, rtol=0)
    assert (pasted > 0).float().mean() > 0.3  # the windows do cover much of the grids


def test_normalise_attention_scales_each_map_to_255():
    cams = torch.randn(3, 4, 5, 5)
    cams[1, 2] = -1.0  # nothing positive: stays zero
    scaled = normalise_attention(cams)
    peaks = scaled.amax(dim=(-2, -1))
    assert peaks[1, 2] == 0 and (scaled >= 0).all()
    torch.testing.assert_close(peaks[peaks > 0], torch.full_like(peaks[peaks > 0], 255.0))
    torch.testing.assert_close(scaled[0, 0], cams[0, 0].clamp(min=0) / cams[0, 0].max() * 255.0)


def test_accumulation_matches_reference(tmp_path):
    epochs = random_steps(seed=1)
    callback = make_callback(tmp_path)
    feed(callback, epochs)
    attention = [[[[0] * RESOLUTION for _ in range(RESOLUTION)] for _ in CLASS_NAMES] for _ in IMAGE_IDS]
    written = [[False] * NUM_CLASSES for _ in IMAGE_IDS]
    for number, batches in enumerate(epochs):
        for batch in batches:
            reference_accumulate(
                attention,
                written,
                batch["indices"].tolist(),
                batch["cams"],
                batch["logits"],
                batch["labels"],
                batch["crop_boxes"],
                batch["flipped"].tolist(),
                min_probability=0.1,
                write_missing=number == len(epochs) - 1,
            )
    array, flags = stored(tmp_path / "run")
    difference = np.abs(array.astype(int) - np.array(attention))
    assert difference.max() <= 1 and (difference == 0).mean() > 0.99  # float32 vs float64 rounding
    assert flags.tolist() == written
    assert array.max() > 200 and flags.any() and not flags.all()


def test_same_steps_in_another_order_give_the_same_file(tmp_path):
    epochs = random_steps(seed=2)
    first, second = make_callback(tmp_path, "first"), make_callback(tmp_path, "second")
    feed(first, epochs)
    feed(second, [regroup(epoch, seed=number, batch_size=4) for number, epoch in enumerate(epochs)])
    for name in (ATTENTION_FILE, WRITTEN_FILE):
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes()


def test_one_image_twice_in_a_batch_is_the_max_of_both(tmp_path):
    epochs = random_steps(seed=3, num_epochs=1)
    together, apart = make_callback(tmp_path, "together"), make_callback(tmp_path, "apart")
    items = regroup(epochs[0], seed=0, batch_size=1)
    doubled = [dict(item, indices=torch.zeros_like(item["indices"])) for item in items[:3]]  # all image 0
    feed(together, [regroup(doubled, seed=1, batch_size=3)])
    feed(apart, [doubled])
    assert np.array_equal(stored(tmp_path / "together")[0], stored(tmp_path / "apart")[0])


def test_probability_gate_and_last_epoch_rule(tmp_path):
    callback = make_callback(tmp_path, start_epoch=0, min_probability=0.1)
    weak, strong = torch.logit(torch.tensor(0.05)), torch.logit(torch.tensor(0.9))
    # Maps at the grid's size with the whole-image window: pasted pixel for pixel, so peaks stay 255.
    cams = torch.rand(1, NUM_CLASSES, RESOLUTION, RESOLUTION, generator=torch.Generator().manual_seed(0))
    step = {
        "indices": torch.tensor([2]),
        "cams": cams,
        "logits": torch.stack([strong, weak, strong])[None],
        "labels": torch.tensor([[1.0, 1.0, 0.0]]),  # class 2 confident but not tagged
        "crop_boxes": torch.tensor([[0.0, 0.0, 1.0, 1.0]]),
        "flipped": torch.tensor([False]),
    }
    callback.accumulate(step)
    array, written = stored(tmp_path / "run")
    assert written[2].tolist() == [True, False, False] and array[2, 0].max() == 255
    assert array[2, 1:].max() == 0 and not array[[0, 1, 3, 4, 5, 6]].any()

    # Last epoch: the weak tagged class is written now; a written class is still gated; untagged never.
    last = dict(step, cams=torch.rand_like(cams), logits=torch.stack([weak, weak, strong])[None])
    callback.accumulate(last, write_missing=True)
    new_array, written = stored(tmp_path / "run")
    assert written[2].tolist() == [True, True, False]
    assert new_array[2, 1].max() == 255 and new_array[2, 2].max() == 0
    assert np.array_equal(new_array[2, 0], array[2, 0])


def test_two_ranks_writing_disjoint_images_match_one_process(tmp_path):
    epochs = random_steps(seed=4)
    single = make_callback(tmp_path, "single")
    feed(single, epochs)
    rank_zero = make_callback(tmp_path, "shared")
    rank_one = make_callback(tmp_path, "shared", create=False)
    rank_one.open_storage(image_ids=IMAGE_IDS, class_names=CLASS_NAMES)
    for number, batches in enumerate(epochs):
        for batch in regroup(batches, seed=number, batch_size=1):
            rank = rank_zero if int(batch["indices"][0]) % 2 == 0 else rank_one
            rank.accumulate(batch, write_missing=number == len(epochs) - 1)
        rank_zero.flush()
        rank_one.flush()
    for name in (ATTENTION_FILE, WRITTEN_FILE):
        assert (tmp_path / "single" / name).read_bytes() == (tmp_path / "shared" / name).read_bytes()


def test_opening_a_file_of_another_dataset_is_an_error(tmp_path):
    make_callback(tmp_path)
    other = make_callback(tmp_path, create=False)
    with pytest.raises(InvalidData, match="image ids that differ from the training dataset's"):
        other.open_storage(image_ids=IMAGE_IDS[::-1])
    with pytest.raises(InvalidData, match=r"index.json: resolution \d+, expected the callback's 4"):
        AttentionAccumulationCallback(tmp_path / "run", resolution=4).open_storage()
    with pytest.raises(
        MissingInput, match=f"{INDEX_FILE} not found: expected an attention-accumulation folder"
    ):
        AttentionAccumulationCallback(tmp_path / "nowhere").open_storage()
    with pytest.raises(InvalidSetting, match=r"min_probability: expected a value in \[0, 1\], got 2.0"):
        AttentionAccumulationCallback(tmp_path, min_probability=2.0)


# --------------------------------------------------------------------------------------------- real runs
class RecordingAttentionCallback(AttentionAccumulationCallback):
    """Records, per accumulated step, the dataset positions and whether missing classes were forced."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.steps: list[tuple[int, list[int], bool]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        assert outputs["cams"].shape[:2] == batch["labels"].shape and not outputs["cams"].requires_grad
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def write(self, rows, *args, write_missing=False, **kwargs) -> None:
        self.steps.append((len(self.steps), rows.tolist(), write_missing))
        super().write(rows, *args, write_missing=write_missing, **kwargs)


def fit(cfg, callback, max_epochs, ckpt_path=None) -> tuple[L.Trainer, object]:
    datamodule = instantiate(cfg.data)
    module = instantiate(cfg.model)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=max_epochs,
        limit_train_batches=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[MemoryBankCallback(), callback],
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        # Our own checkpoint (its hyperparameters hold Hydra partials, which weights_only refuses).
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=False)
    return trainer, datamodule


def test_fit_leaves_a_file_keyed_by_the_split_and_resume_continues_it(compose_train_config, tmp_path):
    cfg = compose_train_config("data.batch_size=4")
    callback = RecordingAttentionCallback(tmp_path / "first", start_epoch=1, resolution=16)
    trainer, datamodule = fit(cfg, callback, max_epochs=2)
    # Epoch 0 is skipped; epoch 1 (the last) writes every tagged class of the images it sees.
    assert [forced for _, _, forced in callback.steps] == [True]
    image_ids, class_names, attention = load_accumulated_attention(tmp_path / "first")
    assert image_ids == datamodule.train_dataset.image_ids and class_names == list(cfg.data.class_names)
    assert attention.shape == (48, len(class_names), 16, 16) and attention.dtype == np.uint8
    seen = sorted(index for _, indices, _ in callback.steps for index in indices)
    tagged = datamodule.train_dataset.labels > 0  # (N, C)
    written = np.load(tmp_path / "first" / WRITTEN_FILE)
    assert np.array_equal(written[seen], tagged[seen]) and not written[np.setdiff1d(range(48), seen)].any()
    assert attention[seen].max() > 0 and not attention[np.setdiff1d(range(48), seen)].any()
    index = json.loads((tmp_path / "first" / INDEX_FILE).read_text())
    assert index["complete"] and index["epochs_done"] == 2 and index["seed_normalisation"] == "divide_255"
    every_class = np.arange(len(class_names))
    seed = attention_maps(tmp_path / "first", image_ids[seen[0]], every_class, (20, 30))
    assert seed.shape == (len(class_names), 20, 30) and 0 <= seed.min() and seed.max() <= 1
    with pytest.raises(InvalidData, match="no image 'not_an_image'"):
        attention_maps(tmp_path / "first", "not_an_image", every_class, (4, 4))

    # Resume from the end of epoch 2 into a new run folder: the checkpoint's maps are recreated there and
    # continued; the first run's folder is left as it was.
    checkpoint = tmp_path / "last.ckpt"
    trainer.save_checkpoint(checkpoint)
    before = np.array(attention)
    first_bytes = (tmp_path / "first" / ATTENTION_FILE).read_bytes()
    resumed = RecordingAttentionCallback(tmp_path / "second", start_epoch=1, resolution=16)
    fit(cfg, resumed, max_epochs=3, ckpt_path=checkpoint)
    assert (tmp_path / "first" / ATTENTION_FILE).read_bytes() == first_bytes
    after = np.load(tmp_path / "second" / ATTENTION_FILE)
    assert (after >= before).all() and (after > before).any()
    resumed_seen = [index for _, indices, _ in resumed.steps for index in indices]
    untouched = np.setdiff1d(range(48), resumed_seen)
    assert np.array_equal(after[untouched], before[untouched])
    assert json.loads((tmp_path / "second" / INDEX_FILE).read_text())["epochs_done"] == 3


def test_incomplete_file_is_refused_as_seeds(tmp_path):
    make_callback(tmp_path)
    with pytest.raises(InvalidData, match="complete is false .*; expected true"):
        load_accumulated_attention(tmp_path / "run")
    ids, names, attention = load_accumulated_attention(tmp_path / "run", require_complete=False)
    assert ids == IMAGE_IDS and names == CLASS_NAMES and not attention.any()
