"""``rca-predict``: masks of a user's own images from a trained run (conf/predict.yaml has examples)."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from rca_lightning.inference.prediction import (
    SUMMARY_FILE,
    check_max_pixels,
    check_output_folder,
    list_inputs,
    output_names,
    output_stems,
    predict_files,
)
from rca_lightning.inference.segmenter import Segmenter
from rca_lightning.tasks.stage_settings import SETTINGS_FILE, claim_output_folder
from rca_lightning.utils.atomic import write_json_atomically
from rca_lightning.utils.errors import InvalidData
from rca_lightning.utils.folder_lock import LOCK_FILE, owned_folder
from rca_lightning.utils.setting_ranges import MAX_BATCH_SIZE, MAX_WORKERS, number_in_range

log = logging.getLogger(__name__)


def predict(cfg: DictConfig) -> dict:
    """Write the masks of ``cfg.inputs`` into ``cfg.output_dir``; returns the summary (``predict.json``).
    The inputs, the run and the output folder are checked (read only) first; ``output_dir`` is then this
    process's while it writes (one owner per folder).

    Raises:
        InvalidData: some inputs could not be read or were larger than ``max_pixels`` (each was logged by
            name and skipped; the others are written): the console script exits with status 2.
        InvalidSetting: the output folder is inside the run folder, or an output would replace an input
            (nothing is written, the folder not even made).
    """
    inputs = OmegaConf.to_container(cfg.inputs) if OmegaConf.is_list(cfg.inputs) else str(cfg.inputs)
    paths = list_inputs(inputs)
    max_pixels = check_max_pixels(cfg.max_pixels)
    number_in_range("batch_size", cfg.batch_size, 1, MAX_BATCH_SIZE, integer=True)
    number_in_range("num_workers", cfg.num_workers, 0, MAX_WORKERS, integer=True)
    scales = list(cfg.tta_scales) if cfg.tta_scales is not None else None
    segmenter = Segmenter.from_run(
        cfg.run_dir,
        cfg.source,
        scales,
        cfg.tta_flip,
        cfg.cam_threshold,
        device=cfg.device,
        trusted_targets=cfg.trusted_targets,
    )
    output_dir = Path(cfg.output_dir)
    written = [*output_names(output_stems(paths), bool(cfg.overlay)), SUMMARY_FILE, SETTINGS_FILE, LOCK_FILE]
    check_output_folder(output_dir, Path(cfg.run_dir), [*paths, segmenter.run.checkpoint], written)
    with owned_folder(output_dir, "output_dir"):
        return _write_masks(cfg, segmenter, paths, output_dir, max_pixels)


def _write_masks(
    cfg: DictConfig, segmenter: Segmenter, paths: list[Path], output_dir: Path, max_pixels: int
) -> dict:
    """Claim ``output_dir`` (held by this process) for these settings; write the masks, ``predict.json``."""
    settings = {"stage": "rca-predict", **segmenter.settings(), "overlay": bool(cfg.overlay)}
    output_dir.mkdir(parents=True, exist_ok=True)
    claim_output_folder(output_dir, settings)
    if segmenter.run.source == "cams":
        log.info("Background threshold %s (%s)", segmenter.cam_threshold, settings["cam_threshold_origin"])
    summary = predict_files(
        segmenter, paths, output_dir, cfg.overlay, cfg.batch_size, cfg.num_workers, cfg.progress, max_pixels
    ).as_dict()
    write_json_atomically(output_dir / SUMMARY_FILE, {**settings, **summary})
    log.info(
        "%d masks in %s (%d written now, %d already there, %d failed; %.2f images/s)",
        summary["total"] - len(summary["failed"]),
        output_dir,
        summary["written"],
        summary["skipped"],
        len(summary["failed"]),
        summary["images_per_second"],
    )
    if summary["failed"]:
        failed, first = len(summary["failed"]), summary["failed"][0]["reason"]
        raise InvalidData(
            f"{failed} of {summary['total']} inputs could not be read (first: {first}); "
            f"the other masks are in {output_dir}"
        )
    return summary
