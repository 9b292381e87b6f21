"""The one image reader and the one mask writer / reader: modes users' files come in, EXIF orientation,
palette PNGs in the VOC colours, and broken files named."""

import numpy as np
import pytest
from PIL import Image

from rca_lightning.imaging.image_arrays import read_rgb_file
from rca_lightning.imaging.palette_png import (
    mask_file_is_complete,
    palette_png_bytes,
    read_mask_png,
    voc_palette,
    write_palette_png,
)
from rca_lightning.utils.errors import InvalidData, MissingInput


def test_every_mode_becomes_rgb_uint8(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_rgb_file(tmp_path / "rgb.png"), rgb)
    Image.fromarray(np.dstack([rgb, np.zeros((5, 7), np.uint8)]), mode="RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_rgb_file(tmp_path / "rgba.png"), rgb)  # alpha dropped, colours kept
    Image.fromarray(rgb[:, :, 1]).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(read_rgb_file(tmp_path / "grey.png"), np.repeat(rgb[:, :, 1:2], 3, axis=2))
    deep = np.array([[0, 65535, 257 * 128]], np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert read_rgb_file(tmp_path / "deep.png")[0, :, 0].tolist() == [0, 255, 128]  # 16 bits scaled to 8


def test_exif_orientation_turns_the_image_upright(tmp_path):
    pixels = np.zeros((4, 6, 3), np.uint8)
    pixels[0] = 255  # a white top row (luminance: JPEG keeps it sharp)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # stored sideways: the viewer rotates it 90 degrees clockwise
    image.save(tmp_path / "phone.jpg", exif=exif, quality=100)
    upright = read_rgb_file(tmp_path / "phone.jpg")
    assert upright.shape == (6, 4, 3)
    assert upright[:, -1].min() > 200 and upright[:, :2].max() < 60  # the top row is now on the right


def test_broken_and_missing_image_files_are_named(tmp_path):
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "whole.jpg")
    content = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(content[: len(content) // 2])
    with pytest.raises(InvalidData, match=r"cut\.jpg: cannot decode image"):
        read_rgb_file(tmp_path / "cut.jpg")
    with pytest.raises(MissingInput, match=r"gone\.jpg not found"):
        read_rgb_file(tmp_path / "gone.jpg")


def test_masks_are_palette_pngs_in_voc_colours_that_read_back_exactly(tmp_path):
    mask = np.array([[0, 1, 2], [20, 255, 3]], np.uint8)
    path = write_palette_png(tmp_path / "sub" / "mask.png", mask)
    with Image.open(path) as png:
        assert png.mode == "P"
        colours = np.array(png.getpalette()[: 3 * 256], np.uint8).reshape(256, 3)
    np.testing.assert_array_equal(colours, voc_palette())
    assert voc_palette()[1].tolist() == [128, 0, 0] and voc_palette()[15].tolist() == [192, 128, 128]
    np.testing.assert_array_equal(read_mask_png(path), mask)
    assert (tmp_path / "sub" / "mask.png").read_bytes() == palette_png_bytes(mask)
    (tmp_path / "cut.png").write_bytes(path.read_bytes()[:40])
    assert mask_file_is_complete(path) and not mask_file_is_complete(tmp_path / "cut.png")
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(
        InvalidData, match=r"rgb\.png: mode 'RGB'; expected a palette \(P\) or grey \(L\) PNG"
    ):
        read_mask_png(tmp_path / "rgb.png")
