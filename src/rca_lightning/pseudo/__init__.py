"""From CAMs to pseudo masks: CAM scores, CAM inference and files, the attention-accumulation store, seed
sources, dense CRF, refiners, IRN's relation labels and random walk, scoring. Below lit and callbacks."""

from rca_lightning.pseudo.attention_store import AttentionStore, load_accumulated_attention
from rca_lightning.pseudo.cam_evaluation import evaluate_cams, evaluate_masks, sweep_thresholds
from rca_lightning.pseudo.cam_inference import CAMDataModule, CAMPredictor, tagged_class_scores
from rca_lightning.pseudo.cam_prediction_writer import CAMWriter
from rca_lightning.pseudo.cam_scores import masks_from_scores, normalized_cam_scores, peak_normalise
from rca_lightning.pseudo.cam_writer import (
    cam_file_is_complete,
    cam_path,
    load_cam_file,
    save_cam_file,
)
from rca_lightning.pseudo.crf import DenseCRF
from rca_lightning.pseudo.ir_labels import IRLabelRefiner
from rca_lightning.pseudo.pseudo_mask_writer import PseudoMaskJob, write_pseudo_masks
from rca_lightning.pseudo.pseudo_masks import (
    background_and_class_scores,
    channels_to_labels,
    saliency_pseudo_mask,
)
from rca_lightning.pseudo.random_walk import random_walk, random_walk_mask
from rca_lightning.pseudo.refiners import CRFRefiner, RandomWalkRefiner, Refiner, SaliencyRefiner
from rca_lightning.pseudo.seed_sources import SEED_KINDS, SeedSource, attention_maps, combine_seeds

__all__ = [
    "AttentionStore",
    "CAMDataModule",
    "CAMPredictor",
    "CAMWriter",
    "DenseCRF",
    "IRLabelRefiner",
    "CRFRefiner",
    "PseudoMaskJob",
    "RandomWalkRefiner",
    "Refiner",
    "SaliencyRefiner",
    "SEED_KINDS",
    "SeedSource",
    "attention_maps",
    "background_and_class_scores",
    "cam_file_is_complete",
    "cam_path",
    "channels_to_labels",
    "combine_seeds",
    "evaluate_cams",
    "evaluate_masks",
    "load_accumulated_attention",
    "load_cam_file",
    "masks_from_scores",
    "normalized_cam_scores",
    "peak_normalise",
    "saliency_pseudo_mask",
    "save_cam_file",
    "sweep_thresholds",
    "tagged_class_scores",
    "random_walk",
    "random_walk_mask",
    "write_pseudo_masks",
]
