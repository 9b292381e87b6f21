"""``rca-predict``: masks of a user's own images from a trained run (conf/predict.yaml has examples)."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from rca_lightning.cli.console import run_console_script
from rca_lightning.cli.stage_settings import claim_output_folder
from rca_lightning.inference.prediction import list_inputs, predict_files
from rca_lightning.inference.segmenter import Segmenter
from rca_lightning.utils.atomic import write_json_atomically
from rca_lightning.utils.errors import InvalidData
from rca_lightning.utils.quiet import silence_known_noise

log = logging.getLogger(__name__)


def predict(cfg: DictConfig) -> dict:
    """Write the masks of ``cfg.inputs`` into ``cfg.output_dir``; returns the summary (``predict.json``).

    Raises:
        InvalidData: some inputs could not be read (each was logged by name and skipped; the others are
            written): the console script exits with status 2.
    """
    inputs = OmegaConf.to_container(cfg.inputs) if OmegaConf.is_list(cfg.inputs) else str(cfg.inputs)
    paths = list_inputs(inputs)
    scales = list(cfg.tta_scales) if cfg.tta_scales is not None else None
    segmenter = Segmenter.from_run(
        cfg.run_dir, cfg.source, scales, cfg.tta_flip, cfg.cam_threshold, device=cfg.device
    )
    output_dir = Path(cfg.output_dir)
    settings = {"stage": "rca-predict", **segmenter.settings(), "overlay": bool(cfg.overlay)}
    output_dir.mkdir(parents=True, exist_ok=True)
    claim_output_folder(output_dir, settings)
    if segmenter.run.source == "cams":
        log.info("Background threshold %s (%s)", segmenter.cam_threshold, settings["cam_threshold_origin"])
    summary = predict_files(
        segmenter, paths, output_dir, cfg.overlay, cfg.batch_size, cfg.num_workers, cfg.progress
    ).as_dict()
    write_json_atomically(output_dir / "predict.json", {**settings, **summary})
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


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def hydra_main(cfg: DictConfig) -> None:
    silence_known_noise()
    predict(cfg)


def main() -> None:
    """The console script: user errors end in one line and exit status 2."""
    run_console_script(hydra_main, "rca-predict")


if __name__ == "__main__":
    main()
