"""Image ids name files: an id read from a split list of any split, or a COCO ``file_name``, that would
lead out of a folder (``../../x``, an absolute path) is refused where it is read, in one line naming the list
and the id; and every writer of per-image files refuses such a name again, so nothing is written outside
its output folder even if a dataset check were bypassed."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rca_lightning.data import SyntheticVOCGenerator, VOCDataModule, VOCSegmentationDataset
from rca_lightning.data.voc_layout import check_voc_layout, split_file_path
from rca_lightning.pseudo.boundary_maps import BoundaryMapWriter, boundary_map_path
from rca_lightning.pseudo.cam_prediction_writer import CAMWriter
from rca_lightning.pseudo.cam_writer import cam_path
from rca_lightning.pseudo.pseudo_mask_writer import mask_path
from rca_lightning.utils.errors import InvalidData, MissingInput
from tests.console_runs import run_in_process
from tests.stage_helpers import make_training_run
from tests.test_data_validation_cli import OTHER_STDERR_LINES

CLASSES = ("disc", "square", "triangle")
# Lightning's advertisement, printed when rca-cams builds its Trainer (before the split is read).
LIGHTNING_TIP = "\N{ELECTRIC LIGHT BULB} Tip:"
SEPARATOR = "holds a path separator ('/' or '\\')"


@pytest.fixture(scope="module")
def built_in_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ids") / "data" / "VOC2012"
    SyntheticVOCGenerator(class_names=CLASSES, num_train=4, num_val=2, image_size=32, seed=0).generate(root)
    return root


@pytest.fixture
def root(built_in_root, tmp_path) -> Path:
    """A private copy, two folders below ``tmp_path``: ``JPEGImages/../../x.jpg`` is ``tmp_path/x.jpg``."""
    return Path(shutil.copytree(built_in_root, tmp_path / "data" / "VOC2012"))


def plant_image_for(root: Path, image_id: str) -> None:
    """Put a real image and annotation where an escaping id points, as someone crafting the list would: the
    id's files exist, so only the id check stands between it and a write outside the output folder."""
    first = split_file_path(root, "train").read_text().split()[0]
    image = root / "JPEGImages" / f"{image_id}.jpg"
    annotation = root / "Annotations" / f"{image_id}.xml"
    for source, target in (
        (root / "JPEGImages" / f"{first}.jpg", image),
        (root / "Annotations" / f"{first}.xml", annotation),
    ):  # noqa: E501
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def write_extra_split(root: Path, *ids: str) -> Path:
    """``ImageSets/Segmentation/extra.txt``: a valid id, then ``ids``."""
    first = split_file_path(root, "train").read_text().split()[0]
    path = split_file_path(root, "extra")
    path.write_text("".join(f"{image_id}\n" for image_id in (first, *ids)))
    return path


@pytest.mark.parametrize(
    "make_id, reason",
    [
        (lambda tmp: "../../x", SEPARATOR),
        (lambda tmp: str(tmp / "elsewhere" / "x"), SEPARATOR),
        (lambda tmp: "..\\..\\x", SEPARATOR),
        (lambda tmp: "..", "is '..'"),
        (lambda tmp: "x\0y", "holds a NUL character"),
    ],
    ids=["relative", "absolute", "backslash", "dot-dot", "nul"],
)
def test_a_split_list_of_any_split_with_an_id_leading_out_is_refused_naming_the_line(
    root, tmp_path, make_id, reason
):
    image_id = make_id(tmp_path)
    if "\0" not in image_id:
        plant_image_for(root, image_id)
    split_list = write_extra_split(root, image_id)
    expected = (
        f"{split_list} line 2: image id {image_id!r} {reason}; expected a file name without folder parts"
    )
    with pytest.raises(InvalidData) as error:
        VOCSegmentationDataset(root, "extra", CLASSES)
    assert str(error.value) == expected
    with pytest.raises(InvalidData) as error:
        VOCDataModule(root, CLASSES, image_size=32).make_dataset("extra")
    assert str(error.value) == expected
    with pytest.raises((InvalidData, MissingInput)) as error:  # '/' gets the hint to convert the list
        check_voc_layout(root, {"extra": "SegmentationClass"})
    assert f"{split_list} line" in str(error.value) and repr(image_id) in str(error.value)


@pytest.mark.parametrize("image_id", ["../../x", "/abs/x", "sub/../../x", "a\0b"])
def test_every_writer_of_per_image_files_refuses_an_id_leading_out(tmp_path, image_id):
    """CAM files, pseudo masks and boundary maps, given an id no dataset check saw."""
    before = set(tmp_path.rglob("*"))
    cams = {"image_id": image_id, "classes": np.array([0]), "cams": np.ones((1, 4, 4), np.float32)}
    with pytest.raises(InvalidData, match="not a file inside the output folder"):
        CAMWriter(tmp_path / "out" / "cams").write_on_batch_end(None, None, [cams], None, None, 0, 0)
    with pytest.raises(InvalidData, match="not a file inside the output folder"):
        writer = BoundaryMapWriter(tmp_path / "out" / "boundary")
        prediction = {"image_id": [image_id], "boundary": [np.zeros((2, 2), np.float32)]}
        writer.write_on_batch_end(None, None, prediction, None, None, 0, 0)
    for where in (mask_path, cam_path, boundary_map_path):  # what the pseudo-mask writer and readers use
        with pytest.raises(InvalidData, match="not a file inside the output folder"):
            where(tmp_path / "out" / "masks", image_id)
    assert set(tmp_path.rglob("*")) == before  # nothing written anywhere, inside or out


@pytest.mark.slow
def test_rca_cams_on_a_split_with_an_escaping_id_stops_in_one_line_and_writes_nothing_outside(tmp_path):
    train_dir = tmp_path / "train"
    train_dir.mkdir()
    make_training_run(train_dir, tmp_path / "cache")
    root = Path(json.loads((train_dir / "metrics.json").read_text())["dataset"]["root"])
    run_dir = tmp_path / "runs" / "cams"  # CAMs go to runs/cams/cams: ../../x.npz would be runs/x.npz
    plant_image_for(root, "../../x")
    split_list = write_extra_split(root, "../../x")
    run_dir.parent.mkdir()
    before = set(tmp_path.rglob("*"))
    result = run_in_process(  # in this process (tests/console_runs.py)
        "rca-cams",
        f"train_dir={train_dir}",
        "split=extra",
        "trainer=cpu",
        "scales=[1.0]",
        "trainer.enable_progress_bar=false",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [
        line
        for line in result.stderr.splitlines()
        if line.strip() and not line.startswith((*OTHER_STDERR_LINES, LIGHTNING_TIP))
    ]
    assert lines == [
        f"rca-cams: error: {split_list} line 2: image id '../../x' holds a path separator ('/' or '\\'); "
        "expected a file name without folder parts"
    ]
    outside = [path for path in set(tmp_path.rglob("*")) - before if not path.is_relative_to(run_dir)]
    assert not [path for path in outside if path.stem == "x"], outside  # no CAM, nothing named from the id
    assert not list(run_dir.rglob("*.npz"))
