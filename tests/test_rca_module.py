"""RCALitModule and MemoryBankCallback wired through the real Hydra config."""

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from rca_lightning import MemoryBankCallback, RCALitModule


class RecordingCallback(L.Callback):
    """Counts the confident regions the module hands to the bank, step by step."""

    def __init__(self) -> None:
        self.confident_per_class = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.confident_per_class = self.confident_per_class + outputs["region_confident"].sum(0)


def build(cfg, **trainer_overrides):
    datamodule = instantiate(cfg.data)
    module = instantiate(cfg.model)
    trainer_options = {
        "accelerator": "cpu",
        "max_epochs": 3,
        "limit_train_batches": 3,
        "limit_val_batches": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        **trainer_overrides,
    }
    return datamodule, module, trainer_options


def test_callback_fills_bank_with_exactly_the_confident_regions(compose_train_config):
    # Threshold 0 makes every present region confident, so the bank fills from the first step.
    cfg = compose_train_config(
        "model.confidence_threshold=0.0", "callbacks.memory_bank.contrast_start_epoch=1"
    )
    datamodule, module, options = build(cfg)
    recorder = RecordingCallback()
    trainer = L.Trainer(callbacks=[MemoryBankCallback(contrast_start_epoch=1), recorder], **options)
    trainer.fit(module, datamodule=datamodule)

    bank = module.memory_bank
    assert int(recorder.confident_per_class.sum()) > 0
    assert torch.equal(bank.count, recorder.confident_per_class.clamp(max=bank.queue_length))
    assert bool(bank.prototype_valid.any()), "prototypes were never refreshed"
    assert module.contrast_active, "the contrast was not switched on at its start epoch"
    assert torch.isfinite(bank.queue).all()


def test_contrast_switches_on_at_its_start_epoch(compose_train_config):
    cfg = compose_train_config("model.confidence_threshold=0.0")
    datamodule, module, options = build(cfg, max_epochs=2)
    trainer = L.Trainer(callbacks=[MemoryBankCallback(contrast_start_epoch=2)], **options)
    trainer.fit(module, datamodule=datamodule)
    assert not module.contrast_active


def test_plain_cam_baseline_never_touches_the_bank(compose_train_config):
    cfg = compose_train_config("model=cam")
    datamodule, module, options = build(cfg, max_epochs=1)
    assert not module.uses_memory_bank and module.net.aggregation is None
    trainer = L.Trainer(callbacks=[MemoryBankCallback(contrast_start_epoch=0)], **options)
    trainer.fit(module, datamodule=datamodule)
    assert int(module.memory_bank.count.sum()) == 0


def test_rca_without_the_callback_is_a_clear_error(compose_train_config):
    cfg = compose_train_config()
    datamodule, module, options = build(cfg, max_epochs=1)
    with pytest.raises(ValueError, match="needs a MemoryBankCallback"):
        L.Trainer(**options).fit(module, datamodule=datamodule)


def test_optimizer_groups_and_step_schedule(compose_train_config):
    # The public code's recipe: SGD with 1x / 2x / 10x / 20x learning rates.
    cfg = compose_train_config(
        "model/optimizer=sgd",
        "model.optimizer.lr=0.1",
        "model.lr_multipliers={backbone_weight:1,backbone_bias:2,new_weight:10,new_bias:20}",
        "model.lr_milestone_epochs=[1,2]",
    )
    datamodule, module, options = build(cfg, max_epochs=3)
    trainer = L.Trainer(callbacks=[MemoryBankCallback()], **options)
    trainer.fit(module, datamodule=datamodule)
    optimizer = trainer.optimizers[0]
    lrs = {group["name"]: group["lr"] for group in optimizer.param_groups}
    # Two decays (after epochs 1 and 2) of 0.1 x the 1/2/10/20 multipliers.
    expected = {"backbone_weight": 1, "backbone_bias": 2, "new_weight": 10, "new_bias": 20}
    for name, multiplier in expected.items():
        assert lrs[name] == pytest.approx(0.1 * multiplier * 0.01), name
    decays = {group["name"]: group["weight_decay"] for group in optimizer.param_groups}
    assert decays["new_weight"] == pytest.approx(5e-4) and decays["new_bias"] == 0.0
    assert trainer.lr_scheduler_configs[0].interval == "epoch"
    grouped = sum(len(group["params"]) for group in optimizer.param_groups)
    assert grouped == len(list(module.net.parameters()))


def test_checkpoint_loads_with_weights_only_and_carries_the_bank(compose_train_config, tmp_path):
    cfg = compose_train_config("model.confidence_threshold=0.0")
    datamodule, module, options = build(cfg, max_epochs=2)
    trainer = L.Trainer(callbacks=[MemoryBankCallback()], **options)
    trainer.fit(module, datamodule=datamodule)
    trainer.save_checkpoint(tmp_path / "rca.ckpt")
    checkpoint = torch.load(tmp_path / "rca.ckpt", weights_only=True)  # no pickled Python objects
    state = checkpoint["state_dict"]
    for buffer in ["queue", "pointer", "count", "prototypes", "prototype_valid"]:
        assert torch.equal(state[f"memory_bank.{buffer}"], getattr(module.memory_bank, buffer)), buffer
    assert int(state["memory_bank.count"].sum()) > 0


def test_image_without_foreground_class_gives_finite_losses(compose_train_config):
    cfg = compose_train_config()
    module: RCALitModule = instantiate(cfg.model)
    module.log = lambda *args, **kwargs: None
    module.contrast_active = True
    bank = module.memory_bank
    bank.enqueue(torch.randn(12, bank.dim), torch.arange(12) % bank.num_classes)
    batch = {"image": torch.randn(2, 3, 64, 64), "labels": torch.zeros(2, module.net.num_classes)}
    output = module.training_step(batch, 0)
    assert torch.isfinite(output["loss"])
    assert not output["region_confident"].any()
    output["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)


def test_mismatched_bank_width_is_rejected(compose_train_config):
    cfg = compose_train_config("model.memory_bank.dim=7")
    with pytest.raises(Exception, match="memory_bank.dim"):
        instantiate(cfg.model)
