"""Install the torchvision import hook into the active environment's site-packages, where it is needed.

Run as ``python src/rca_lightning/compat/install.py`` (the Makefile's ``install`` target does): by
path, because importing the package itself imports torchvision, which is what the hook fixes.

The hook is needed where torchvision's compiled extension (``torchvision/_C``) does not load next to the
installed torch (the PyPI torchvision wheel is a CUDA build; a CPU-only torch lacks the CUDA libraries it
links): then ``import torchvision`` fails without it. The installer loads the extension as torchvision
does (``torch.ops.load_library``) and, when that fails, writes ``rca_lightning_torchvision_ops_hook.py``
and a ``.pth`` file that imports it at every interpreter start; where the extension loads it writes
nothing (and removes a hook installed before). It prints what it did and why. ``--uninstall`` removes the
hook.
"""

import argparse
import importlib.machinery
import importlib.metadata
import importlib.util
import os
import shutil
import sysconfig
import tempfile
from pathlib import Path

HOOK_MODULE = "rca_lightning_torchvision_ops_hook"
PTH_NAME = f"{HOOK_MODULE}.pth"
WHAT = "torchvision import hook"


def _write_atomically(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        tmp.write(text)
    os.replace(tmp.name, path)


def install(site_packages: Path) -> None:
    source = Path(__file__).with_name("torchvision_ops_hook.py")
    _write_atomically(site_packages / f"{HOOK_MODULE}.py", source.read_text())
    _write_atomically(site_packages / PTH_NAME, f"import {HOOK_MODULE}\n")


def uninstall(site_packages: Path) -> bool:
    """Remove the hook; whether there was one."""
    found = (site_packages / PTH_NAME).exists()
    for name in (f"{HOOK_MODULE}.py", PTH_NAME):
        (site_packages / name).unlink(missing_ok=True)
    shutil.rmtree(site_packages / "__pycache__" / f"{HOOK_MODULE}", ignore_errors=True)
    return found


def load_error(library: Path) -> str | None:
    """Why ``library`` does not load into this torch as a library of operators (None when it loads)."""
    import torch

    try:
        torch.ops.load_library(str(library))
    except OSError as error:
        reason = error.__cause__ or error  # the loader's own words: the missing library
        return str(reason).splitlines()[0]
    return None


def hook_needed() -> tuple[bool, str]:
    """Whether the hook is needed (torchvision's compiled extension does not load next to the installed
    torch), and why or why not, in words that name both."""
    spec = importlib.util.find_spec("torchvision")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return False, "torchvision is not installed"
    import torch

    folder = Path(next(iter(spec.submodule_search_locations)))
    extension = f"torchvision {importlib.metadata.version('torchvision')}'s compiled extension"
    build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
    torch_build = f"torch {torch.__version__} ({build})"
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    library = next((folder / f"_C{s}" for s in suffixes if (folder / f"_C{s}").exists()), None)
    if library is None:
        return True, f"{extension} is missing (next to {torch_build})"
    error = load_error(library)
    if error is None:
        return False, f"{extension} loads next to {torch_build}"
    return True, f"{extension} does not load next to {torch_build}: {error}"


def install_where_needed(site_packages: Path, needed: bool, reason: str) -> str:
    """Install the hook into ``site_packages`` when ``needed`` (:func:`hook_needed`), else remove one
    installed before; returns the line that says what was done and why."""
    if not needed:
        removed = "; removed the one installed before" if uninstall(site_packages) else ""
        return f"{WHAT}: not needed ({reason}){removed}"
    install(site_packages)
    return f"{WHAT}: installed in {site_packages} because {reason}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uninstall", action="store_true")
    parser.add_argument("--site-packages", type=Path, default=Path(sysconfig.get_paths()["purelib"]))
    args = parser.parse_args()
    if args.uninstall:
        found = uninstall(args.site_packages)
        print(f"{WHAT}: {'removed from' if found else 'none in'} {args.site_packages}")
    else:
        print(install_where_needed(args.site_packages, *hook_needed()))


if __name__ == "__main__":
    main()
