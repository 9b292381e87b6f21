"""Loggers of `rca-train`: wandb offline without an API key, TensorBoard and CSV, with CAM overlays and
pseudo masks of fixed val images."""

import csv
import json
import socket
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from wandb.proto import wandb_internal_pb2

from rca_lightning.pseudo.cam_scores import masks_from_scores
from rca_lightning.tasks.train import train
from rca_lightning.utils.resolvers import sqlite_url, wandb_api_key_available, wandb_offline
from tests.test_image_logging import read_tensorboard_images

NUM_IMAGES = 3
EPOCHS = 2
LEVELDB_BLOCK = 32768  # wandb's transaction log: the LevelDB log format, records split over 32 KiB blocks


def wandb_records(run_file: Path) -> list:
    """Every record of a ``run-<id>.wandb`` file (what `wandb sync` uploads)."""
    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    records, pending, offset = [], b"", 7  # after the file header
    while offset + 7 <= len(data):
        if LEVELDB_BLOCK - offset % LEVELDB_BLOCK < 7:  # block trailer too small for a header
            offset += LEVELDB_BLOCK - offset % LEVELDB_BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[offset : offset + 7])
        pending += data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def item_key(item) -> str:
    return item.key or "/".join(item.nested_key)


@pytest.fixture
def no_wandb_key(tmp_path, monkeypatch):
    """No API key anywhere wandb looks, and no WANDB_MODE: offline must come from the config."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    empty_netrc = tmp_path / "netrc"
    empty_netrc.write_text("")
    monkeypatch.setenv("NETRC", str(empty_netrc))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_home"))


def test_wandb_key_detection(tmp_path, monkeypatch, no_wandb_key):
    assert not wandb_api_key_available()
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password 0123456789\n")
    assert wandb_api_key_available()
    (tmp_path / "netrc").write_text("")
    monkeypatch.setenv("WANDB_API_KEY", "0123456789")
    assert wandb_api_key_available()


def test_wandb_runs_offline_exactly_without_a_key_or_a_server_unless_wandb_mode_says(
    tmp_path, monkeypatch, no_wandb_key
):
    assert wandb_offline()  # no key
    monkeypatch.setenv("WANDB_API_KEY", "0123456789")
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed.getsockname()[1]}")
        assert wandb_offline()  # a key, but no server
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert not wandb_offline()  # a key and a server: online
        monkeypatch.delenv("WANDB_API_KEY")
        monkeypatch.setenv("WANDB_MODE", "disabled")
        assert not wandb_offline()  # the user's WANDB_MODE decides, untouched by the logger


def test_sqlite_url_creates_the_folder(tmp_path):
    url = sqlite_url(str(tmp_path / "sweeps" / "study" / "optuna.db"))
    assert url == f"sqlite:///{tmp_path / 'sweeps' / 'study' / 'optuna.db'}"
    assert (tmp_path / "sweeps" / "study").is_dir()


def test_pseudo_masks_take_the_top_class_above_the_threshold():
    scores = torch.tensor([[[[0.9, 0.2]], [[0.5, 0.25]]]])  # (1, 2 classes, 1, 2)
    assert masks_from_scores(scores, 0.3).tolist() == [[[1, 0]]]
    assert masks_from_scores(scores, 0.1).tolist() == [[[1, 2]]]


@pytest.mark.slow
def test_wandb_offline_run_holds_config_metrics_and_images(compose_train_config, no_wandb_key, tmp_path):
    cfg = compose_train_config(
        "logger=[csv,tensorboard,wandb]",
        f"trainer.max_epochs={EPOCHS}",
        "+trainer.limit_train_batches=2",
        f"callbacks.cam_images.num_images={NUM_IMAGES}",
    )
    assert cfg.logger.wandb.offline is True  # no key: offline by default
    train(cfg)
    output_dir = Path(cfg.paths.output_dir)

    runs = list((output_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    records = wandb_records(next(runs[0].glob("run-*.wandb")))
    history = [
        {item_key(i): json.loads(i.value_json) for i in r.history.item} for r in records if r.history.item
    ]
    config = {item_key(i): json.loads(i.value_json) for r in records for i in r.config.update}
    assert config["model"]["contrast_weight"] == cfg.model.contrast_weight  # the resolved config
    cam_miou = [row["val/cam_mIoU"] for row in history if "val/cam_mIoU" in row]
    assert len(cam_miou) == EPOCHS and all(0 <= value <= 100 for value in cam_miou)
    assert any("train/loss_epoch" in row for row in history)
    for key in ("val/cam_overlay", "val/pseudo_mask"):  # wandb flattens each image group into key/field
        counts = [row[f"{key}/count"] for row in history if f"{key}/count" in row]
        assert counts == [NUM_IMAGES] * EPOCHS, key
    media = runs[0] / "files" / "media" / "images" / "val"
    overlays, masks = list(media.glob("cam_overlay_*.png")), list(media.glob("pseudo_mask_*.png"))
    assert overlays and masks  # identical images are stored once, so at most NUM_IMAGES * EPOCHS each
    image_size = cfg.data.generator.image_size
    assert np.array(Image.open(overlays[0])).shape[:2] == (image_size, image_size)
    assert np.array(Image.open(masks[0])).shape[:2] == (image_size, 2 * image_size)  # pseudo | truth

    # The same images as PNG files beside the CSV metrics, and as TensorBoard images.
    csv_images = output_dir / "csv" / "images" / "val"
    assert len(list((csv_images / "cam_overlay").glob("*.png"))) == NUM_IMAGES * EPOCHS
    assert len(list((csv_images / "pseudo_mask").glob("*.png"))) == NUM_IMAGES * EPOCHS
    with open(output_dir / "csv" / "metrics.csv") as f:
        assert any(row.get("val/cam_mIoU") for row in csv.DictReader(f))
    tensorboard_images = read_tensorboard_images(output_dir / "tensorboard")
    assert (
        len([tag for tag, _ in tensorboard_images if tag.startswith("val/cam_overlay/")])
        == NUM_IMAGES * EPOCHS
    )
