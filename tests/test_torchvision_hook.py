"""The import hook that lets torchvision (and so timm, lightning, torchmetrics) import next to a CPU torch."""

import multiprocessing
import subprocess
import sys
import textwrap

from rca_lightning.compat import install


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True)


def import_stack_in_worker(queue) -> None:
    import lightning  # noqa: F401
    import timm  # noqa: F401
    import torchmetrics  # noqa: F401

    queue.put("ok")


def test_hook_is_installed_in_site_packages():
    result = run_python(f"import {install.HOOK_MODULE}, sys; print({install.HOOK_MODULE}.__file__)")
    assert result.returncode == 0, result.stderr
    assert "site-packages" in result.stdout


def test_stack_imports_in_a_fresh_interpreter():
    result = run_python("import timm, lightning, torchmetrics, torchvision; print('ok')")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"


def test_stack_imports_in_a_spawned_worker():
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    worker = context.Process(target=import_stack_in_worker, args=(queue,))
    worker.start()
    worker.join(timeout=300)
    assert worker.exitcode == 0
    assert queue.get(timeout=5) == "ok"


def test_hook_does_nothing_when_the_extension_loads():
    # A torchvision.extension that reports its ops loaded: the hook must not define anything.
    result = run_python(
        f"""
        import sys, types
        import {install.HOOK_MODULE} as hook
        extension = types.ModuleType("torchvision.extension")
        extension._has_ops = lambda: True
        sys.modules["torchvision.extension"] = extension
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
        extension = types.ModuleType("torchvision.extension")
        extension._has_ops = lambda: False
        sys.modules["torchvision.extension"] = extension
        hook._define_missing_schemas()
        print(str(torch.ops.torchvision.nms.default._schema))
        """
    )
    assert result.returncode == 0, result.stderr
    assert "torchvision::nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor" in result.stdout


def test_install_and_uninstall_round_trip(tmp_path):
    install.install(tmp_path)
    assert (tmp_path / f"{install.HOOK_MODULE}.py").exists()
    assert (tmp_path / install.PTH_NAME).read_text() == f"import {install.HOOK_MODULE}\n"
    install.uninstall(tmp_path)
    assert list(tmp_path.iterdir()) == []
