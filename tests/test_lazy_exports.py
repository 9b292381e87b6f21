"""The packages whose public names are imported on first use: every name resolves to its home's object and
stays, an unknown name is an AttributeError, and the console's error handling imports no Lightning."""

import ast
import subprocess
import sys

import pytest

import rca_lightning
import rca_lightning.utils


@pytest.mark.parametrize("package", [rca_lightning, rca_lightning.utils])
def test_every_public_name_resolves_once_and_is_listed(package):
    for name in package.__all__:
        value = getattr(package, name)
        assert value.__name__ == name and vars(package)[name] is value
        assert name in dir(package)
    with pytest.raises(AttributeError, match="has no attribute 'Missing'"):
        package.Missing  # noqa: B018


def test_the_console_wrapper_imports_without_lightning():
    code = "import sys, rca_lightning.cli.console; print(sorted({n.split('.')[0] for n in sys.modules}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    top_level_packages = ast.literal_eval(result.stdout.strip())
    assert "rca_lightning" in top_level_packages
    assert not {"lightning", "torchmetrics", "timm"} & set(top_level_packages)
