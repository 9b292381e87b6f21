"""``rca-export``: a run's segmentation network as an ONNX or TorchScript file, checked against PyTorch.

The exported graph is the network alone: normalised images (B, 3, H, W) float32 in, logits
(B, C + 1, H, W) out, with the batch, height and width dynamic. Test-time views and the CRF of the
evaluation path stay outside it. Beside ``FILE`` goes ``FILE.json``: the class names, the normalisation
the input needs and the tensor names. After writing, the file is loaded by the runtime that serves it
(onnxruntime for ONNX, ``torch.jit.load`` for TorchScript) and run on a sample image at its own size, a
size the export never saw; the largest absolute difference to PyTorch's logits must be at most 1e-4.
"""

from __future__ import annotations

import importlib
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rca_lightning.inference.image_arrays import normalise_images
from rca_lightning.utils.atomic import write_bytes_atomically, write_json_atomically
from rca_lightning.utils.errors import InvalidSetting, MissingInput

FORMATS = ("onnx", "torchscript")
INPUT_NAME, OUTPUT_NAME = "images", "logits"
# The example the graph is traced with: two images of a size no sample image is checked at.
TRACE_SHAPE = (2, 3, 96, 112)


def require_onnx(module: str):
    """Import ``module`` of the optional ``onnx`` extra; a MissingInput saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingInput(
            f"format=onnx: needs the {module} package; expected it installed "
            "(pip install 'rca-lightning[onnx]', included in the dev install)"
        ) from error


def _onnx_bytes(net: nn.Module, example: torch.Tensor, opset: int) -> bytes:
    require_onnx("onnxscript")  # torch's ONNX exporter builds the graph with it
    batch = torch.export.Dim("batch", min=1, max=1024)
    height = torch.export.Dim("height", min=16, max=8192)
    width = torch.export.Dim("width", min=16, max=8192)
    program = torch.onnx.export(
        net,
        (example,),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamo=True,
        opset_version=opset,
        dynamic_shapes=({0: batch, 2: height, 3: width},),
        verbose=False,
    )
    with tempfile.TemporaryDirectory() as folder:  # the program saves to a path; weights kept inline
        path = Path(folder) / "network.onnx"
        program.save(str(path))
        return path.read_bytes()


def _torchscript_bytes(net: nn.Module, example: torch.Tensor) -> bytes:
    # torch.jit is deprecated in favour of torch.export; the format is what the user asked for.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.trace.*deprecated", category=Warning)
        traced = torch.jit.trace(net, example)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "network.pt"
        traced.save(str(path))
        return path.read_bytes()


def export_network(net: nn.Module, output: Path, export_format: str, opset: int = 18) -> Path:
    """Write ``net`` (eval mode, on the CPU) to ``output`` in ``export_format``, atomically."""
    if export_format not in FORMATS:
        raise InvalidSetting(f"format={export_format}: expected one of {list(FORMATS)}")
    net = net.cpu().eval()
    example = torch.randn(TRACE_SHAPE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        content = (
            _onnx_bytes(net, example, opset) if export_format == "onnx" else _torchscript_bytes(net, example)
        )
    write_bytes_atomically(output, content)
    return output


def run_exported(path: Path, export_format: str, images: torch.Tensor) -> np.ndarray:
    """The logits of the exported file at ``path`` for normalised ``images``, through its own runtime."""
    if export_format == "onnx":
        onnxruntime = require_onnx("onnxruntime")

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0]
    loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return loaded(images).numpy()


def max_abs_difference(
    net: nn.Module, path: Path, export_format: str, pixels: np.ndarray, mean, std
) -> float:
    """Largest |exported - PyTorch| logit on one (H, W, 3) uint8 image, normalised with ``mean`` / ``std``."""
    images = normalise_images(torch.from_numpy(pixels)[None], mean, std)
    with torch.no_grad():
        expected = net.cpu().eval()(images).numpy()
    exported = run_exported(path, export_format, images)
    if exported.shape != expected.shape:
        raise RuntimeError(f"{path}: logits of shape {exported.shape}, PyTorch gives {expected.shape}")
    return float(np.abs(exported - expected).max())


def write_export_record(output: Path, record: dict) -> Path:
    """``<output>.json``: what a user of the exported file needs (classes, normalisation, tensor names)."""
    path = output.with_name(output.name + ".json")
    write_json_atomically(path, {"input": INPUT_NAME, "output": OUTPUT_NAME, **record})
    return path


__all__ = [
    "FORMATS",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "require_onnx",
    "export_network",
    "max_abs_difference",
    "run_exported",
    "write_export_record",
]
