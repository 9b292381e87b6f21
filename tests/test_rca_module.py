"""RCALitModule and the MemoryBankCallback it attaches, wired through the real Hydra config."""

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from rca_lightning import MemoryBankCallback, RCALitModule
from rca_lightning.pseudo.attention_store import ATTENTION_FILE
from rca_lightning.utils.errors import InvalidSetting
from rca_lightning.utils.resolvers import register_resolvers
from tests.conftest import CONFIG_DIR


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
    cfg = compose_train_config("model.confidence_threshold=0.0", "model.contrast_start_epoch=1")
    datamodule, module, options = build(cfg)
    recorder = RecordingCallback()
    trainer = L.Trainer(callbacks=[recorder], **options)
    trainer.fit(module, datamodule=datamodule)

    bank = module.memory_bank
    assert int(recorder.confident_per_class.sum()) > 0
    assert torch.equal(bank.count, recorder.confident_per_class.clamp(max=bank.queue_length))
    assert bool(bank.prototype_valid.any()), "prototypes were never refreshed"
    assert module.contrast_active, "the contrast was not switched on at its start epoch"
    assert torch.isfinite(bank.queue).all()


@pytest.mark.parametrize("start_epoch", [1, 3])
def test_contrast_loss_runs_from_its_start_epoch_on_and_never_before(compose_train_config, start_epoch):
    cfg = compose_train_config("model.confidence_threshold=0.0", f"model.contrast_start_epoch={start_epoch}")
    datamodule, module, options = build(cfg, max_epochs=3)  # 3 batches an epoch
    calls_per_epoch = [0, 0, 0]
    contrast_values: list[float] = []

    def count(loss_module, inputs, output) -> None:
        calls_per_epoch[trainer.current_epoch] += 1
        contrast_values.append(float(output))

    module.contrast_loss.register_forward_hook(count)
    trainer = L.Trainer(**options)
    trainer.fit(module, datamodule=datamodule)

    assert calls_per_epoch == [0 if epoch < start_epoch else 3 for epoch in range(3)]
    assert all(value > 0 for value in contrast_values)  # a real InfoNCE term over a filled bank
    assert module.contrast_active == (start_epoch < 3)


def test_plain_cam_baseline_never_touches_the_bank(compose_train_config):
    cfg = compose_train_config("model=cam")
    datamodule, module, options = build(cfg, max_epochs=1)
    assert not module.uses_memory_bank and module.net.aggregation is None
    assert module.configure_callbacks() == []
    trainer = L.Trainer(**options)
    trainer.fit(module, datamodule=datamodule)
    assert int(module.memory_bank.count.sum()) == 0
    assert not any(isinstance(callback, MemoryBankCallback) for callback in trainer.callbacks)


def test_rca_attaches_its_memory_bank_callback_replacing_a_given_one(compose_train_config):
    cfg = compose_train_config(
        "model.confidence_threshold=0.0", "model.contrast_start_epoch=0", "model.prototype_start_epoch=2"
    )
    datamodule, module, options = build(cfg, max_epochs=1)
    trainer = L.Trainer(callbacks=[MemoryBankCallback(contrast_start_epoch=5)], **options)
    trainer.fit(module, datamodule=datamodule)
    attached = [callback for callback in trainer.callbacks if isinstance(callback, MemoryBankCallback)]
    assert len(attached) == 1
    assert (attached[0].contrast_start_epoch, attached[0].prototype_start_epoch) == (0, 2)
    assert module.contrast_active and int(module.memory_bank.count.sum()) > 0


def test_optimizer_groups_and_step_schedule(compose_train_config):
    # The public code's recipe: SGD with 1x / 2x / 10x / 20x learning rates.
    cfg = compose_train_config(
        "model/optimizer=sgd",
        "model.optimizer.lr=0.1",
        "model.lr_multipliers={backbone_weight:1,backbone_bias:2,new_weight:10,new_bias:20}",
        "model.lr_milestone_epochs=[1,2]",
    )
    datamodule, module, options = build(cfg, max_epochs=3)
    trainer = L.Trainer(**options)
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


@pytest.mark.slow
def test_checkpoint_loads_with_weights_only_and_carries_the_bank(compose_train_config, tmp_path):
    cfg = compose_train_config("model.confidence_threshold=0.0")
    datamodule, module, options = build(cfg, max_epochs=2)
    trainer = L.Trainer(**options)
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
    with pytest.raises(InstantiationException, match="memory_bank.dim") as error:
        instantiate(cfg.model)
    assert isinstance(error.value.__cause__, InvalidSetting)
    assert str(error.value.__cause__) == "memory_bank.dim: expected net.embedding_dim (16), got 7"


# ------------------------------------------------------------------------------ the release's optimiser
RELEASE_EXTRA_LAYERS = ("coarse_head", "class_heads", "projection")  # its extra_convs*, extra_F


def release_lr_and_decay(name: str, base_lr: float) -> tuple[float, float]:
    """The public code's rule by parameter name: layers named extra* get 10x (a name containing "weight",
    BatchNorm scales included) / 20x (any other), all others (backbone and the aggregation's Q, K, V, aggre,
    concat_project) 1x / 2x; weight decay 5e-4 on everything."""
    extra = name.split(".")[0] in RELEASE_EXTRA_LAYERS
    is_bias = "weight" not in name
    multiplier = (20.0 if is_bias else 10.0) if extra else (2.0 if is_bias else 1.0)
    return base_lr * multiplier, 5e-4


def lr_and_decay_per_parameter(module: RCALitModule) -> dict[str, tuple[float, float]]:
    optimizer = module.configure_optimizers()["optimizer"]
    by_id = {
        id(parameter): (group["lr"], group["weight_decay"])
        for group in optimizer.param_groups
        for parameter in group["params"]
    }
    return {name: by_id[id(parameter)] for name, parameter in module.net.named_parameters()}


RELEASE_OPTIMIZER = (
    "model/optimizer=sgd",
    "model.lr_multipliers={backbone_weight:1,backbone_bias:2,new_weight:10,new_bias:20}",
)


def test_release_lr_groups_and_bias_weight_decay(compose_train_config):
    cfg = compose_train_config(
        *RELEASE_OPTIMIZER,
        "model.aggregation_lr=backbone",
        "model.bias_weight_decay=true",
        "model.net.parameter_grouping=by_name",
    )
    module = instantiate(cfg.model)
    settings = lr_and_decay_per_parameter(module)
    assert any(name.startswith("aggregation.") for name in settings)
    assert settings["projection.layers.1.weight"] == pytest.approx((1e-2, 5e-4))  # BatchNorm scale: 10x
    for name in settings:  # every parameter of the net
        expected_lr, expected_decay = release_lr_and_decay(name, 1e-3)
        assert settings[name][0] == pytest.approx(expected_lr), name
        assert settings[name][1] == pytest.approx(expected_decay), name


def test_project_default_trains_aggregation_as_new_layers_without_bias_decay(compose_train_config):
    module = instantiate(compose_train_config(*RELEASE_OPTIMIZER).model)
    settings = lr_and_decay_per_parameter(module)
    assert settings["aggregation.fuse.weight"] == pytest.approx((1e-2, 5e-4))
    assert settings["aggregation.fuse.bias"] == pytest.approx((2e-2, 0.0))
    backbone_weight = next(
        name for name, parameter in module.net.backbone.named_parameters() if parameter.ndim > 1
    )
    assert settings[f"backbone.{backbone_weight}"] == pytest.approx((1e-3, 5e-4))


def test_aggregation_multipliers_come_from_aggregation_lr_only(compose_train_config):
    with pytest.raises(InstantiationException, match="aggregation_lr"):
        instantiate(compose_train_config("+model.lr_multipliers.aggregation_weight=1.0").model)
    with pytest.raises(InstantiationException, match="aggregation_lr: expected one of"):
        instantiate(compose_train_config("model.aggregation_lr=extra").model)


def compose_release_experiment(*overrides: str):
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=["experiment=voc_rca_vgg16", "data.root=/nonexistent", *overrides])


def test_voc_rca_vgg16_experiment_composes_to_the_release_settings():
    cfg = compose_release_experiment()
    model = cfg.model
    assert model.contrast_loss.mixup_order == "mix_then_normalise"
    assert model.contrast_loss.denominator_floor == pytest.approx(1e-4)
    assert model.aggregation_lr == "backbone" and model.bias_weight_decay is True
    assert model.net.init == "normal" and model.net.init_std == pytest.approx(0.01)
    assert model.net.backbone.name == "vgg16" and model.net.backbone.output_stride == 8
    optimizer = model.optimizer
    assert optimizer._target_ == "torch.optim.SGD" and optimizer.nesterov is True
    assert (optimizer.lr, optimizer.momentum, optimizer.weight_decay) == pytest.approx((1e-3, 0.9, 5e-4))
    assert dict(model.lr_multipliers) == {
        "backbone_weight": 1.0,
        "backbone_bias": 2.0,
        "new_weight": 10.0,
        "new_bias": 20.0,
    }
    assert list(model.lr_milestone_epochs) == [5, 10] and model.lr_gamma == pytest.approx(0.1)
    assert cfg.trainer.max_epochs == 30 and cfg.data.batch_size == 8
    accumulation = cfg.callbacks.attention_accumulation
    assert accumulation._target_.endswith("AttentionAccumulationCallback")
    assert not cfg.data.crop and not cfg.data.hflip  # whole, unflipped images: maps are the feature maps
    assert accumulation.resolution == cfg.data.image_size // model.net.backbone.output_stride == 46
    assert "model_checkpoint" in cfg.callbacks  # the default callbacks stay
    assert "memory_bank" not in cfg.callbacks  # the module attaches its own


def test_voc_rca_vgg16_module_builds_the_release_optimizer():
    cfg = compose_release_experiment("model.net.backbone.pretrained=false", "model.net.head_width=8")
    module = instantiate(cfg.model)
    features = module.net.backbone(torch.zeros(1, 3, cfg.data.image_size, cfg.data.image_size))
    assert features.shape[-2:] == (cfg.callbacks.attention_accumulation.resolution,) * 2
    settings = lr_and_decay_per_parameter(module)
    assert settings["projection.layers.0.bias"] == pytest.approx((2e-2, 5e-4))  # extra_F's conv has a bias
    for name in settings:
        assert settings[name] == pytest.approx(release_lr_and_decay(name, 1e-3)), name


def test_voc_rca_vgg16_accumulates_the_feature_maps_unresampled(tmp_path):
    cfg = compose_release_experiment()
    callback = instantiate(cfg.callbacks.attention_accumulation, output_dir=str(tmp_path))
    side = callback.resolution
    callback.create_storage(["a", "b", "c"], ["cat", "dog"])
    generator = torch.Generator().manual_seed(0)
    cams = torch.randn(3, 2, side, side, generator=generator)  # (B, C, h, w) at the feature resolution
    labels = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    whole_images = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(3, 4)  # uncropped, as the preset trains
    logits = torch.full((3, 2), 2.0)
    batch = {"indices": torch.arange(3), "cams": cams, "logits": logits, "labels": labels}
    callback.accumulate({**batch, "crop_boxes": whole_images, "flipped": torch.zeros(3, dtype=torch.bool)})
    callback.flush()
    stored = torch.from_numpy(np.load(tmp_path / ATTENTION_FILE)).long()  # (N, C, S, S)
    for image in range(3):
        for label in range(2):
            expected = torch.zeros(side, side, dtype=torch.long)
            if labels[image, label] > 0:  # the release: rint(relu(map) / max * 255), pixel for pixel
                positive = cams[image, label].double().clamp(min=0)
                expected = torch.round(positive / positive.max() * 255.0).long()
            difference = (stored[image, label] - expected).abs()
            assert difference.max() <= 1 and (difference == 0).float().mean() > 0.99  # float32 rounding
