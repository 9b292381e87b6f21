"""One owner per folder: a folder held by a running process refuses a second one at once, runs started in the
same second get folders of their own, and a resume with other settings is refused with its record kept.

A folder is held by a process of its own (:func:`held`), and the script it refuses runs in this process
(``tests/console_runs.py``): two processes. The runs that must be processes of their own (a folder named by
its launch's process id) are started as such (:func:`script`)."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rca_lightning.utils.folder_lock import owned_folder
from rca_lightning.utils.run_fingerprint import FINGERPRINT_FILE
from tests.console_runs import OFFLINE, run_in_process
from tests.stage_helpers import make_dataset_with_cams

SCRIPTS = Path(sys.executable).parent
ENVIRONMENT = {**os.environ, **OFFLINE}
# Holds the folder given as its argument until its stdin closes.
HOLDER = (
    "import sys\n"
    "from rca_lightning.utils.folder_lock import owned_folder\n"
    "with owned_folder(sys.argv[1], 'folder'):\n"
    "    print('held', flush=True)\n"
    "    sys.stdin.read()\n"
)
TINY_TRAINING = [
    "debug=fast",
    "data.generator.num_train=8",
    "data.generator.num_val=4",
    "data.generator.image_size=32",
    "data.batch_size=4",
    "data.num_workers=0",
    "model.net.head_width=16",
    "model.net.projection_dim=16",
    "model.net.attention_dim=16",
    "model.memory_bank.queue_length=32",
    "model.memory_bank.num_prototypes=3",
    "trainer=cpu",
    "trainer.enable_progress_bar=false",
]


def script(name: str, *overrides: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(SCRIPTS / name), *overrides],
        cwd=cwd,
        env=ENVIRONMENT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_here(name: str, *overrides: str, cwd: Path) -> tuple[int, list[str]]:
    """Exit status and stderr lines of the script ``name`` run in this process, from the folder ``cwd``."""
    result = run_in_process(name, *overrides, cwd=cwd)
    return result.returncode, result.stderr.splitlines()


def finished(process: subprocess.Popen) -> tuple[int, list[str]]:
    """Exit status and stderr lines of a script started by :func:`script`."""
    _, stderr = process.communicate(timeout=600)
    return process.returncode, stderr.splitlines()


@pytest.fixture
def held(tmp_path):
    """Hold a folder from another process (as a running stage would); yields (folder, holder pid)."""
    processes = []

    def _hold(folder: Path) -> int:
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(folder)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        processes.append(holder)
        assert holder.stdout.readline().strip() == "held"
        return holder.pid

    yield _hold
    for holder in processes:
        holder.stdin.close()
        holder.wait(timeout=60)


@pytest.mark.slow
def test_a_run_folder_in_use_stops_a_second_script_at_once(tmp_path, held):
    run_dir = tmp_path / "run"
    holder = held(run_dir)
    status, lines = run_here("rca-eval", f"hydra.run.dir={run_dir}", "masks_dir=x", cwd=tmp_path)
    assert status == 2
    assert lines == [
        f"rca-eval: error: hydra.run.dir={run_dir}: in use by process {holder} ({run_dir / '.lock'}); "
        "expected one process per output folder: wait for it to end, or choose another folder"
    ]
    assert sorted(path.name for path in run_dir.iterdir()) == [".lock"]  # Hydra wrote nothing there


@pytest.mark.slow
def test_a_stage_output_folder_in_use_stops_a_second_stage(tmp_path, held):
    cams_dir = tmp_path / "cams"
    cams_dir.mkdir()
    make_dataset_with_cams(tmp_path / "voc", cams_dir, num_images=2)
    masks_dir = tmp_path / "masks"
    holder = held(masks_dir)
    status, lines = run_here(
        "rca-pseudo", f"cams_dir={cams_dir}", f"masks_dir={masks_dir}", "progress=false", cwd=tmp_path
    )
    assert status == 2
    assert len(lines) == 1 and lines[0].startswith(f"rca-pseudo: error: masks_dir={masks_dir}: in use by")
    assert f"process {holder} " in lines[0]
    assert sorted(path.name for path in masks_dir.iterdir()) == [".lock"]


@pytest.mark.slow
def test_the_lock_is_reentrant_within_a_process_and_released_after(tmp_path):
    folder = tmp_path / "folder"
    with owned_folder(folder, "folder"), owned_folder(folder / "." / "", "folder"):
        assert (folder / ".lock").read_text() == f"{os.getpid()}\n"
    # Released: another process takes it at once.
    holder = subprocess.run(
        [sys.executable, "-c", HOLDER, str(folder)], input="", capture_output=True, text=True, timeout=60
    )
    assert holder.returncode == 0 and holder.stdout.strip() == "held"


@pytest.mark.slow
def test_runs_started_in_the_same_second_get_folders_of_their_own(tmp_path):
    # Both stop at their first check (nothing to score), after Hydra made their run folders.
    runs = [script("rca-eval", cwd=tmp_path) for _ in range(2)]
    for run in runs:
        status, lines = finished(run)
        assert status == 2 and len(lines) == 1 and "cams_dir / masks_dir" in lines[0], lines
    folders = sorted((tmp_path / "logs" / "eval" / "runs").iterdir())
    # <date>_<time>_pid<process id>: the same second or not, the folders differ by the launch.
    assert sorted(folder.name.rsplit("_", 1)[1] for folder in folders) == sorted(f"pid{r.pid}" for r in runs)


def digests(folder: Path) -> dict[str, str]:
    files = [*sorted((folder / ".hydra").iterdir()), folder / FINGERPRINT_FILE]
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in files}


@pytest.mark.slow
def test_a_resume_with_other_settings_is_refused_and_the_record_kept(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    common = [*TINY_TRAINING, f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}"]
    status, lines = run_here("rca-train", *common, cwd=tmp_path)
    assert status == 0, lines[-20:]
    recorded = digests(run_dir)
    resume = f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"

    status, lines = run_here("rca-train", *common, resume, "model.optimizer.lr=0.5", cwd=tmp_path)
    assert status == 2
    assert len(lines) == 1 and lines[0].startswith("rca-train: error: model.optimizer.lr: "), lines
    assert "records 0.001 where this run has 0.5" in lines[0]
    assert digests(run_dir) == recorded  # what made the weights is still what the run folder says

    status, lines = run_here("rca-train", *common, resume, cwd=tmp_path)
    assert status == 0, lines[-20:]  # the same settings resume
    assert digests(run_dir)[FINGERPRINT_FILE] == recorded[FINGERPRINT_FILE]
