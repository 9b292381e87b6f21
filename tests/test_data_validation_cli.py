"""``rca-train`` on a damaged dataset stops before any training step: one line on stderr, exit status 2.

Each case runs the installed console script's entry point in the test's process
(:func:`tests.console_runs.run_in_process`; about two seconds: the configuration, the datamodule and the
Trainer are built); the other faults are unit tests in ``test_data_validation``. ``rca-train`` as a real
process is run in ``test_user_errors``.
"""

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from rca_lightning.data import SyntheticVOCGenerator
from tests.conftest import TINY_MODEL_OVERRIDES
from tests.console_runs import ScriptResult, run_in_process
from tests.test_coco import TinyCOCO

CLASSES = ("disc", "square", "triangle")
SECONDS_TO_FAIL = 60
# Lightning's device summary, logged to stderr when the Trainer is built (before fit calls prepare_data): the
# only lines besides the error line in a real process, and not the script's own. Run in this process, they do
# not reach the script's captured stderr (Lightning's handler keeps the stream it found at import).
OTHER_STDERR_LINES = ("GPU available:", "TPU available:", "HPU available:")


def rca_train(overrides: list[str], run_dir: Path) -> tuple[ScriptResult, float]:
    """Run ``rca-train``'s entry point in this process with tiny CPU settings; returns its result and the
    seconds it took."""
    arguments = [
        *overrides,
        "data.image_size=32",
        "data.batch_size=2",
        "data.num_workers=0",
        *TINY_MODEL_OVERRIDES,
        "trainer=cpu",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        f"paths.cache_dir={run_dir.parent / 'cache'}",
        f"hydra.run.dir={run_dir}",
    ]
    started = time.perf_counter()
    result = run_in_process("rca-train", *arguments)
    return result, time.perf_counter() - started


@pytest.fixture(scope="module")
def built_in_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("validation_cli") / "VOC2012"
    SyntheticVOCGenerator(class_names=CLASSES, num_train=6, num_val=4, image_size=48, seed=0).generate(root)
    return root


def truncate_train_image(root: Path) -> list[str]:
    image = root / "JPEGImages" / "train_000002.jpg"
    image.write_bytes(image.read_bytes()[:400])
    return [
        "train.txt: 1 of 6 image ids fail validation",
        f"first train_000002: image {image} does not decode",
    ]


def empty_val_annotation(root: Path) -> list[str]:
    xml = root / "Annotations" / "val_000001.xml"
    xml.write_text("<annotation><filename>val_000001.jpg</filename></annotation>")
    return ["val.txt: 1 of 4 image ids fail validation, first val_000001: mask", f"but {xml} has no <object>"]


def repeat_val_id(root: Path) -> list[str]:
    split_list = root / "ImageSets" / "Segmentation" / "val.txt"
    split_list.write_text(split_list.read_text() + "val_000002\n")
    return [f"{split_list}: 1 image id(s) listed more than once, first 'val_000002' (2 times)"]


VOC_CASES: dict[str, Callable[[Path], list[str]]] = {
    "truncated_jpeg": truncate_train_image,
    "xml_without_object": empty_val_annotation,
    "repeated_val_id": repeat_val_id,
}


def assert_stopped_before_training(result: ScriptResult, seconds: float, run_dir: Path) -> str:
    """Exit status 2, one line on stderr (returned), no checkpoint or metrics written, quick."""
    lines = [
        line
        for line in result.stderr.splitlines()
        if line.strip() and not line.startswith(OTHER_STDERR_LINES)
    ]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("rca-train: error: ") and "Traceback" not in result.stderr
    written = {path.name for path in run_dir.rglob("*")}
    assert not any(name.endswith(".ckpt") for name in written) and "metrics.json" not in written, written
    assert "metrics.csv" not in written, written  # no step logged
    assert seconds < SECONDS_TO_FAIL
    return lines[0]


@pytest.mark.parametrize("case", list(VOC_CASES))
def test_rca_train_stops_on_a_damaged_voc_folder(built_in_root, tmp_path, case):
    root = Path(shutil.copytree(built_in_root, tmp_path / "VOC2012"))
    expected = VOC_CASES[case](root)
    overrides = ["data=voc", f"data.root={root}", f"data.class_names=[{','.join(CLASSES)}]"]
    result, seconds = rca_train(overrides, tmp_path / "run")
    line = assert_stopped_before_training(result, seconds, tmp_path / "run")
    for part in expected:
        assert part in line, line


def test_rca_train_stops_on_coco_without_annotations(tmp_path):
    coco = TinyCOCO(tmp_path / "coco2014")
    path = coco.write_json("train2014", annotations=[])
    overrides = ["data=coco", f"data.root={coco.root}", "data.mask_workers=0"]
    result, seconds = rca_train(overrides, tmp_path / "run")
    line = assert_stopped_before_training(result, seconds, tmp_path / "run")
    assert line == (
        f"rca-train: error: {path}: 'annotations' is empty; expected at least one annotated image in split "
        "'train2014'"
    )
