"""The atomic writer: a writer killed mid-write leaves nothing the next write does not remove, a live
writer's file is never taken, and files get the usual mode under the process's umask."""

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rca_lightning.utils import atomic
from rca_lightning.utils.atomic import (
    STALE_AFTER_SECONDS,
    atomic_output,
    path_inside,
    remove_stray_temporaries,
    temporary_path,
    write_bytes_atomically,
)
from rca_lightning.utils.errors import InvalidData

# Writes the target named by argv[1] slowly, forever, and says so once its temporary file has content.
SLOW_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from rca_lightning.utils.atomic import atomic_output

    with atomic_output(Path(sys.argv[1])) as f:
        f.write(b"partial " * 1000)
        f.flush()
        print("writing", flush=True)
        while True:
            f.write(b"partial " * 1000)
            f.flush()
            time.sleep(0.01)
    """
)


def age(path: Path, seconds: float) -> None:
    """Set ``path``'s modification time ``seconds`` in the past (a temporary nobody touched since)."""
    then = time.time() - seconds
    os.utime(path, (then, then))


@pytest.mark.slow
def test_a_writer_killed_mid_write_leaves_nothing_after_the_next_write(tmp_path):
    target = tmp_path / "checkpoints" / "last.ckpt"
    writer = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITER, str(target)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout.readline() == "writing\n"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=60)
    [stray] = list(target.parent.iterdir())
    assert stray.name.startswith(".last.ckpt.atomic-") and stray.stat().st_size > 0 and not target.exists()

    age(stray, STALE_AFTER_SECONDS + 1)
    content = os.urandom(1 << 20)
    write_bytes_atomically(target, content)
    assert list(target.parent.iterdir()) == [target] and target.read_bytes() == content


def test_a_live_writers_temporary_is_kept_however_old(tmp_path):
    target = tmp_path / "index.json"
    with atomic_output(target) as f:
        f.write(b"{}")
        [temporary] = list(tmp_path.iterdir())
        age(temporary, 10 * STALE_AFTER_SECONDS)
        assert remove_stray_temporaries(tmp_path) == [] and temporary.exists()
    assert list(tmp_path.iterdir()) == [target] and target.read_bytes() == b"{}"


def test_only_old_unlocked_temporaries_of_the_writer_are_removed(tmp_path):
    young, old = temporary_path(tmp_path / "a.npz"), temporary_path(tmp_path / "epoch_000.ckpt")
    lookalikes = [tmp_path / ".a.npz.12345678.tmp", tmp_path / "notes.atomic-0123456789abcdef.tmp"]
    for path in [young, old, *lookalikes]:
        path.write_bytes(b"left by a killed writer")
        age(path, STALE_AFTER_SECONDS + 1)
    os.utime(young)  # touched just now
    assert remove_stray_temporaries(tmp_path) == [old]
    assert sorted(tmp_path.iterdir()) == sorted([young, *lookalikes])


# Written from one subprocess: the umask is process-wide, and other tests may be writing files.
UMASK_WRITER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from rca_lightning.utils.atomic import write_bytes_atomically

    for umask in (0o022, 0o002, 0o077):
        os.umask(umask)
        write_bytes_atomically(Path(sys.argv[1]) / f"{umask:03o}.bin", b"x")
    """
)


@pytest.mark.slow
def test_written_files_get_the_usual_mode_under_the_umask(tmp_path):
    subprocess.run([sys.executable, "-c", UMASK_WRITER, str(tmp_path)], check=True, timeout=120)
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in tmp_path.iterdir()}
    assert modes == {"022.bin": 0o644, "002.bin": 0o664, "077.bin": 0o600}


def test_a_temporary_swept_before_its_writer_locked_it_is_replaced(tmp_path, monkeypatch):
    """A sweeper that removes a just-created temporary file before its writer takes the lock (the one
    instant a file is unlocked while alive) costs the writer a new name, not its output."""
    real_flock = atomic.fcntl.flock
    swept = []

    def sweep_then_lock(descriptor, operation):
        if not swept:
            [created] = list(tmp_path.iterdir())
            created.unlink()  # what remove_stray_temporaries does to an unlocked file
            swept.append(created)
        return real_flock(descriptor, operation)

    monkeypatch.setattr(atomic.fcntl, "flock", sweep_then_lock)
    write_bytes_atomically(tmp_path / "report.json", b"{}")
    assert len(swept) == 1 and list(tmp_path.iterdir()) == [tmp_path / "report.json"]
    assert (tmp_path / "report.json").read_bytes() == b"{}"


def test_path_inside_takes_plain_names_in_the_folder(tmp_path):
    folder = tmp_path / "not_made_yet"
    assert path_inside(folder, "2007_000032.png") == folder / "2007_000032.png"
    assert path_inside(tmp_path, "..png") == tmp_path / "..png"  # dots inside a name are a name


@pytest.mark.parametrize(
    "name", ["../../x.npz", "../x.png", "sub/../../x.png", "/etc/x.png", "a\0.png", ".."]
)
def test_path_inside_refuses_a_name_escaping_its_folder_in_one_line(tmp_path, name):
    folder = tmp_path / "cams"
    with pytest.raises(InvalidData) as error:
        path_inside(folder, name)
    message = str(error.value)
    assert message.startswith(f"{name!r} ") and f"output folder {folder};" in message and "\n" not in message


def test_path_inside_refuses_a_link_leading_out_of_the_folder(tmp_path):
    folder = tmp_path / "masks"
    folder.mkdir()
    (folder / "x.png").symlink_to(tmp_path / "elsewhere.png")
    with pytest.raises(InvalidData, match=f"resolves to {tmp_path / 'elsewhere.png'}"):
        path_inside(folder, "x.png")
