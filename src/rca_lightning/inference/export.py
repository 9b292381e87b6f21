"""``rca-export``: a run's segmentation network as an ONNX or TorchScript file, checked against PyTorch.

The exported graph is the network alone: normalised images (B, 3, H, W) float32 in, logits
(B, C + 1, H, W) out, with the batch, height and width dynamic. Test-time views and the CRF of the
evaluation path stay outside it. Beside ``FILE`` goes ``FILE.json``: the class names, the normalisation
the input needs and the tensor names. Before the file is written, its bytes are loaded by the runtime that
serves it (onnxruntime for ONNX, ``torch.jit.load`` for TorchScript) and run on a sample image at its own
size, a size the export never saw; only when the largest absolute difference to PyTorch's logits is within
the tolerance (1e-4 by default) are those bytes written to ``FILE`` (atomically), so a file that failed its
check is never left there.
"""

from __future__ import annotations

import importlib
import io
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rca_lightning.imaging.image_arrays import normalise_images
from rca_lightning.utils.atomic import write_json_atomically
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
            "(from a clone: pip install -e '.[onnx]', included in the dev install)"
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


def exported_bytes(net: nn.Module, export_format: str, opset: int = 18) -> bytes:
    """``net`` (eval mode, on the CPU) in ``export_format``: the content of its file."""
    if export_format not in FORMATS:
        raise InvalidSetting(f"format={export_format}: expected one of {list(FORMATS)}")
    net = net.cpu().eval()
    example = torch.randn(TRACE_SHAPE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return (
            _onnx_bytes(net, example, opset) if export_format == "onnx" else _torchscript_bytes(net, example)
        )


def run_exported(exported: bytes | Path, export_format: str, images: torch.Tensor) -> np.ndarray:
    """The logits of an exported network (its file, or the file's content) for normalised ``images``,
    through the runtime that serves it."""
    if export_format == "onnx":
        onnxruntime = require_onnx("onnxruntime")
        model = exported if isinstance(exported, bytes) else str(exported)
        session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
        return session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0]
    source = io.BytesIO(exported) if isinstance(exported, bytes) else str(exported)
    loaded = torch.jit.load(source, map_location="cpu")
    with torch.no_grad():
        return loaded(images).numpy()


def max_abs_difference(
    net: nn.Module, exported: bytes | Path, export_format: str, pixels: np.ndarray, mean, std
) -> float:
    """Largest |exported - PyTorch| logit on one (H, W, 3) uint8 image, normalised with ``mean`` / ``std``;
    ``exported`` is the exported file or its content (:func:`run_exported`)."""
    images = normalise_images(torch.from_numpy(pixels)[None], mean, std)
    with torch.no_grad():
        expected = net.cpu().eval()(images).numpy()
    logits = run_exported(exported, export_format, images)
    if logits.shape != expected.shape:
        raise RuntimeError(f"exported logits of shape {logits.shape}, PyTorch gives {expected.shape}")
    return float(np.abs(logits - expected).max())


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
    "exported_bytes",
    "max_abs_difference",
    "run_exported",
    "write_export_record",
]
