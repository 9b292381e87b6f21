"""log_images: the same RGB images reach CSV (PNG files), TensorBoard (event file) and wandb (offline run)."""

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from PIL import Image
from tensorboardX.proto import event_pb2

from rca_lightning.utils.image_logging import log_images


def random_images(count: int = 2) -> list[np.ndarray]:
    generator = np.random.default_rng(0)
    return [generator.integers(0, 256, size=(5 + n, 7, 3), dtype=np.uint8) for n in range(count)]


def read_tensorboard_images(log_dir: Path) -> dict[tuple[str, int], np.ndarray]:
    """(tag, step) -> decoded image of every image summary in the folder's event files."""
    found = {}
    for path in Path(log_dir).rglob("events.out.tfevents.*"):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            record = data[offset + 12 : offset + 12 + length]  # after length and its CRC
            offset += 12 + length + 4  # record and its CRC
            event = event_pb2.Event.FromString(record)
            for value in event.summary.value:
                if value.HasField("image"):
                    image = Image.open(io.BytesIO(value.image.encoded_image_string))
                    found[(value.tag, event.step)] = np.array(image.convert("RGB"))
    return found


def test_csv_logger_gets_png_files_with_the_exact_pixels(tmp_path):
    logger = CSVLogger(tmp_path, name="csv", version="")
    images = random_images()
    log_images([logger], "val/cam_overlay", images, captions=["img 0: disc", "img/1"], step=12)
    folder = Path(logger.log_dir) / "images" / "val" / "cam_overlay"
    paths = sorted(folder.glob("*.png"))
    assert [p.name for p in paths] == ["0000012_000_img-0-disc.png", "0000012_001_img-1.png"]
    for path, image in zip(paths, images, strict=True):
        np.testing.assert_array_equal(np.array(Image.open(path)), image)


def test_tensorboard_logger_gets_one_image_summary_per_image(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="tb", version="")
    images = random_images()
    log_images(logger, "pseudo_masks", images, captions=["a", "b"], step=3)
    logger.finalize("success")  # tensorboardX writes from a queue that closing drains
    found = read_tensorboard_images(Path(logger.log_dir))
    assert set(found) == {("pseudo_masks/000_a", 3), ("pseudo_masks/001_b", 3)}
    np.testing.assert_array_equal(found[("pseudo_masks/000_a", 3)], images[0])
    np.testing.assert_array_equal(found[("pseudo_masks/001_b", 3)], images[1])


def test_offline_wandb_run_holds_the_images(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = WandbLogger(save_dir=str(tmp_path), project="rca-test", offline=True)
    images = random_images(3)
    log_images([logger], "val/cam_overlay", images, captions=["x", "y", "z"], step=0)
    run_dir = Path(logger.experiment.dir).parent
    logger.experiment.finish()
    pngs = sorted((run_dir / "files" / "media" / "images" / "val").glob("cam_overlay_*.png"))
    assert len(pngs) == 3
    stored = sorted(np.array(Image.open(p).convert("RGB")).tobytes() for p in pngs)
    assert stored == sorted(image.tobytes() for image in images)


@pytest.mark.parametrize(
    ("images", "captions", "message"),
    [
        ([np.zeros((4, 4, 3), np.float32)], None, r"images\[0\].*float32.*expected uint8 \(H, W, 3\)"),
        ([np.zeros((4, 4), np.uint8)], None, r"images\[0\].*\(4, 4\)"),
        ([np.zeros((4, 4, 3), np.uint8)], ["a", "b"], "2 captions for 1 images"),
    ],
)
def test_bad_images_raise_a_one_line_error(tmp_path, images, captions, message):
    with pytest.raises(ValueError, match=message):
        log_images([CSVLogger(tmp_path)], "key", images, captions)


def test_bad_key_raises(tmp_path):
    with pytest.raises(ValueError, match="key='../x'"):
        log_images([CSVLogger(tmp_path)], "../x", random_images(1))


def test_a_logger_without_images_is_skipped_with_a_warning():
    class MetricsOnlyLogger(Logger):
        name = "metrics_only"
        version = 0

        def log_metrics(self, metrics, step=None):
            pass

        def log_hyperparams(self, params, *args, **kwargs):
            pass

    with pytest.warns(UserWarning, match="MetricsOnlyLogger cannot hold images"):
        log_images([MetricsOnlyLogger()], "key", random_images(1))
