"""The import hook that lets torchvision (and so timm, lightning, torchmetrics) import next to a CPU torch,
installed only where torchvision's compiled extension does not load."""

import multiprocessing
import subprocess
import sys
import textwrap

import pytest

from rca_lightning.compat import install

NEEDED, REASON = install.hook_needed()


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True)


def import_stack_in_worker(queue) -> None:
    import lightning  # noqa: F401
    import timm  # noqa: F401
    import torchmetrics  # noqa: F401

    queue.put("ok")


def test_hook_is_installed_in_site_packages_exactly_where_needed():
    result = run_python(f"import {install.HOOK_MODULE}, sys; print({install.HOOK_MODULE}.__file__)")
    assert (result.returncode == 0) == NEEDED, f"{REASON}; {result.stdout}{result.stderr[-500:]}"
    if NEEDED:
        assert "site-packages" in result.stdout


@pytest.mark.skipif(not NEEDED, reason=f"the hook is not needed here: {REASON}")
def test_torchvision_still_needs_the_hook_where_its_extension_does_not_load():
    # What the hook relies on (rca_lightning.compat): torchvision fails to import without it. When this
    # fails, torchvision imports by itself next to this torch and the hook can go.
    result = run_python(
        """
        import sys
        sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "_TorchvisionOpsFinder"]
        import torchvision
        """
    )
    assert result.returncode != 0, f"torchvision imports without rca_lightning.compat's hook ({REASON})"


@pytest.mark.slow
def test_stack_imports_in_a_fresh_interpreter():
    result = run_python("import timm, lightning, torchmetrics, torchvision; print('ok')")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"


@pytest.mark.slow
def test_stack_imports_in_a_spawned_worker():
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    worker = context.Process(target=import_stack_in_worker, args=(queue,))
    worker.start()
    worker.join(timeout=300)
    assert worker.exitcode == 0
    assert queue.get(timeout=5) == "ok"


def test_hook_does_nothing_when_the_extension_loads():
    # The extension's operators defined (here by the test, as a loaded extension would): nothing is defined.
    result = run_python(
        f"""
        import sys, types, torch
        import {install.HOOK_MODULE} as hook
        extension = torch.library.Library("torchvision", "FRAGMENT")
        extension.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        sys.modules["torchvision.extension"] = types.ModuleType("torchvision.extension")
        hook._define_missing_schemas()
        print(hook._library is None)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


def test_hook_defines_the_missing_schemas_when_the_extension_fails():
    result = run_python(
        f"""
        import sys, types, torch
        import {install.HOOK_MODULE} as hook
        sys.modules["torchvision.extension"] = types.ModuleType("torchvision.extension")
        print(hasattr(torch.ops.torchvision, "nms"))
        hook._define_missing_schemas()
        print(hasattr(torch.ops.torchvision, "nms"), hasattr(torch.ops.torchvision, "qnms"))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True", "True"]


def test_install_where_needed_says_what_it_did_and_why(tmp_path):
    line = install.install_where_needed(tmp_path, True, "the extension does not load")
    assert line == f"torchvision import hook: installed in {tmp_path} because the extension does not load"
    assert (tmp_path / f"{install.HOOK_MODULE}.py").exists()
    assert (tmp_path / install.PTH_NAME).read_text() == f"import {install.HOOK_MODULE}\n"
    line = install.install_where_needed(tmp_path, False, "the extension loads")
    assert line == (
        "torchvision import hook: not needed (the extension loads); removed the one installed before"
    )
    assert list(tmp_path.iterdir()) == []
    line = install.install_where_needed(tmp_path, False, "the extension loads")
    assert line == "torchvision import hook: not needed (the extension loads)"
    assert list(tmp_path.iterdir()) == []


def test_a_library_that_does_not_load_is_named_with_the_loaders_reason(tmp_path):
    library = tmp_path / "_C.so"
    library.write_bytes(b"not a shared library")
    assert install.load_error(library)
    assert NEEDED == ("does not load" in REASON or "is missing" in REASON)
