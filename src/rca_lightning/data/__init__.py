"""Datasets and datamodules (VOC, COCO), transforms, file checks and the built-in synthetic dataset
generator. Imports imaging and utils."""

from rca_lightning.data.coco import COCO_CATEGORIES, COCO_CATEGORY_TO_CLASS, COCO_CLASS_NAMES
from rca_lightning.data.coco_datamodule import COCODataModule
from rca_lightning.data.coco_dataset import COCOSegmentationDataset
from rca_lightning.data.coco_masks import build_coco_masks
from rca_lightning.data.datamodule import VOCDataModule
from rca_lightning.data.synthetic import SyntheticVOCGenerator
from rca_lightning.data.synthetic_catalogue import DEFAULT_SYNTHETIC_CLASSES, SYNTHETIC_CLASS_NAMES
from rca_lightning.data.synthetic_coco_like import COCOLikeGenerator, generate_coco_like
from rca_lightning.data.synthetic_real_size import GeneratedDataset
from rca_lightning.data.synthetic_voc_like import VOCLikeGenerator, generate_voc_like
from rca_lightning.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_eval_transform,
    build_train_transform,
)
from rca_lightning.data.voc_classes import IGNORE_INDEX, VOC_CLASS_NAMES, voc_palette
from rca_lightning.data.voc_dataset import VOCSegmentationDataset
from rca_lightning.data.voc_layout import check_voc_layout

__all__ = [
    "COCO_CATEGORIES",
    "COCO_CATEGORY_TO_CLASS",
    "COCO_CLASS_NAMES",
    "COCODataModule",
    "COCOLikeGenerator",
    "COCOSegmentationDataset",
    "DEFAULT_SYNTHETIC_CLASSES",
    "GeneratedDataset",
    "IGNORE_INDEX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SYNTHETIC_CLASS_NAMES",
    "VOC_CLASS_NAMES",
    "SyntheticVOCGenerator",
    "VOCDataModule",
    "VOCLikeGenerator",
    "VOCSegmentationDataset",
    "build_coco_masks",
    "build_eval_transform",
    "build_train_transform",
    "check_voc_layout",
    "generate_coco_like",
    "generate_voc_like",
    "voc_palette",
]
