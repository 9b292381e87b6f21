"""Install the torchvision import hook into the active environment's site-packages.

Run as ``python src/rca_lightning/compat/install.py`` (the Makefile's ``install`` target does): by
path, because importing the package itself imports torchvision, which is what the hook fixes.
Writes ``rca_lightning_torchvision_ops_hook.py`` and a ``.pth`` file that imports it at every
interpreter start; ``--uninstall`` removes both.
"""

import argparse
import os
import shutil
import sysconfig
import tempfile
from pathlib import Path

HOOK_MODULE = "rca_lightning_torchvision_ops_hook"
PTH_NAME = f"{HOOK_MODULE}.pth"


def _write_atomically(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        tmp.write(text)
    os.replace(tmp.name, path)


def install(site_packages: Path) -> None:
    source = Path(__file__).with_name("torchvision_ops_hook.py")
    _write_atomically(site_packages / f"{HOOK_MODULE}.py", source.read_text())
    _write_atomically(site_packages / PTH_NAME, f"import {HOOK_MODULE}\n")


def uninstall(site_packages: Path) -> None:
    for name in (f"{HOOK_MODULE}.py", PTH_NAME):
        (site_packages / name).unlink(missing_ok=True)
    shutil.rmtree(site_packages / "__pycache__" / f"{HOOK_MODULE}", ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uninstall", action="store_true")
    parser.add_argument("--site-packages", type=Path, default=Path(sysconfig.get_paths()["purelib"]))
    args = parser.parse_args()
    (uninstall if args.uninstall else install)(args.site_packages)
    print(f"{'removed' if args.uninstall else 'installed'} torchvision ops hook in {args.site_packages}")


if __name__ == "__main__":
    main()
