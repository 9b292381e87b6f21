"""Let ``import torchvision`` succeed when its compiled extension cannot load.

The PyPI torchvision wheel is a CUDA build; next to a CPU-only torch its ``_C`` extension
fails to load, and ``torchvision._meta_registrations`` then dies registering fake kernels for
two operators that were never defined (``torchvision::nms``, ``torchvision::qnms``). lightning,
torchmetrics and timm all import torchvision, so that one failure breaks the whole stack.

This module is copied verbatim into site-packages by ``python src/rca_lightning/compat/install.py``
where the extension does not load (elsewhere nothing is installed) and imported from a ``.pth`` file
at interpreter start, so it also runs in spawned DDP workers. It must stay import-cheap and
dependency-free: it only installs a meta-path finder. When torchvision is imported, the finder waits
until ``torchvision.extension`` has tried to load ``_C``; only if the operators are then still
undefined (``torch.ops.torchvision``) does it define the two missing schemas.

It knows two names of torchvision's own modules (``_TRIGGERS``): ``tests/test_torchvision_hook.py``
fails when torchvision imports without the hook where the extension does not load (the hook is no
longer needed) or not even with it.
"""

import importlib.abc
import sys

_MISSING_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
# Modules that torchvision imports right after ``torchvision.extension`` and that need the ops.
_TRIGGERS = ("torchvision._autograd_registrations", "torchvision._meta_registrations")
_library = None  # keeps the torch.library fragment alive


def _define_missing_schemas() -> None:
    global _library
    if _library is not None or "torchvision.extension" not in sys.modules:
        return
    import torch

    if hasattr(torch.ops.torchvision, "nms"):  # the extension loaded and defined its operators
        return
    _library = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _MISSING_SCHEMAS:
        _library.define(schema)


class _TorchvisionOpsFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in _TRIGGERS:
            _define_missing_schemas()
        return None  # never loads anything itself


if not any(isinstance(finder, _TorchvisionOpsFinder) for finder in sys.meta_path):
    sys.meta_path.insert(0, _TorchvisionOpsFinder())
