"""EPS and RCA-on-EPS through the method seam: C + 1 maps, the losses, EPS's CAM inference, the callbacks."""

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from rca_lightning import EPSLitModule, MemoryBankCallback, RCALitModule, WSSSMethod
from rca_lightning.pseudo.cam_inference import CAMPredictor, tagged_class_scores
from rca_lightning.utils.errors import InvalidSetting
from rca_lightning.utils.resolvers import register_resolvers
from tests.conftest import CONFIG_DIR

NUM_CLASSES = 6  # the built-in dataset's


def eps_batch(batch_size: int = 2, size: int = 64) -> dict:
    generator = torch.Generator().manual_seed(0)
    labels = torch.zeros(batch_size, NUM_CLASSES)
    labels[0, [0, 3]] = 1
    labels[1:, 5] = 1
    return {
        "image": torch.randn(batch_size, 3, size, size, generator=generator),
        "labels": labels,
        "saliency": torch.rand(batch_size, size, size, generator=generator),
    }


@pytest.mark.parametrize("method", ["eps", "rca_eps"])
@pytest.mark.slow
def test_eps_models_have_a_background_channel_and_train_with_saliency(compose_train_config, method):
    module = instantiate(compose_train_config(f"model={method}").model)
    assert isinstance(module, EPSLitModule) and isinstance(module, WSSSMethod) and module.needs_saliency
    batch = eps_batch()
    output = module(batch["image"])
    assert output.cams.shape[:2] == (2, NUM_CLASSES + 1)  # background last
    assert output.logits.shape == (2, NUM_CLASSES)
    torch.testing.assert_close(output.logits, output.cams[:, :NUM_CLASSES].mean(dim=(2, 3)))
    # EPS's maps: the softmax over the C + 1 maps with the background dropped.
    maps = module.cam_maps(output)
    torch.testing.assert_close(maps, output.cams.softmax(1)[:, :NUM_CLASSES])
    assert float(maps.detach().sum(1).max()) < 1.0  # the background keeps a share of every pixel

    loss, terms = module.training_losses(output, batch)
    expected_terms = {"cls", "saliency"} | ({"coarse", "coarse_saliency"} if method == "rca_eps" else set())
    assert set(terms) == expected_terms
    saliency = module.saliency_loss(output.cams, batch["labels"], batch["saliency"])
    torch.testing.assert_close(terms["saliency"], saliency)
    loss.backward()
    grads = [p.grad for p in module.net.class_heads.parameters()]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    # Validation images have no saliency map: val/loss is the classification part.
    without_saliency = {key: value for key, value in batch.items() if key != "saliency"}
    with torch.no_grad():
        output = module(batch["image"])
        val_loss = module.validation_loss(output, without_saliency)
        classification, _ = RCALitModule.training_losses(module, output, without_saliency)
    torch.testing.assert_close(val_loss, classification)
    with pytest.raises(InvalidSetting, match="data.saliency_dir"):
        module.training_losses(output, without_saliency)


def test_each_method_attaches_exactly_the_callbacks_it_needs(compose_train_config):
    attached = {
        method: [
            type(c) for c in instantiate(compose_train_config(f"model={method}").model).configure_callbacks()
        ]
        for method in ("cam", "rca", "eps", "rca_eps")
    }
    assert attached == {"cam": [], "rca": [MemoryBankCallback], "eps": [], "rca_eps": [MemoryBankCallback]}
    assert "memory_bank" not in compose_train_config().callbacks  # no run lists it


def test_rca_on_eps_regions_come_from_the_foreground_of_the_softmax_over_c_plus_one(compose_train_config):
    module = instantiate(compose_train_config("model=rca_eps", "model.confidence_threshold=0.0").model)
    module.log = lambda *args, **kwargs: None
    batch = eps_batch()
    step = module.training_step(batch, 0)
    assert step["region_embeddings"].shape == (2, NUM_CLASSES, module.net.embedding_dim)
    # Present = tagged and a non-empty region; the background never enters the bank.
    assert step["region_confident"].shape == (2, NUM_CLASSES)
    assert not (step["region_confident"] & (batch["labels"] == 0)).any()


def test_eps_pseudo_mask_settings_and_the_need_for_the_background_channel(compose_train_config):
    module = instantiate(compose_train_config("model=eps").model)
    assert module.pseudo_mask_settings == {"background_threshold": 0.2, "crf": False}
    with_crf = instantiate(compose_train_config("model=eps", "model.pseudo_crf=true").model)
    assert with_crf.pseudo_mask_settings == {"background_threshold": 0.2, "crf": True}
    assert instantiate(compose_train_config("model=rca").model).pseudo_mask_settings == {}
    with pytest.raises(InstantiationException, match="background_channel") as error:
        instantiate(compose_train_config("model=eps", "model.net.background_channel=false").model)
    assert isinstance(error.value.__cause__, InvalidSetting)


def reference_eps_inference(module, image, labels, scales, flip):
    """EPS_REFERENCE.md section 4, one pass at a time: softmax over C + 1, bilinear to the image size, the
    foreground channels times the image label (background discarded), passes summed, each class / its max."""
    height, width = image.shape[-2:]
    total = torch.zeros(NUM_CLASSES, height, width)
    for scale in scales:
        size = (round(height * scale), round(width * scale))
        scaled = F.interpolate(image[None], size, mode="bilinear", align_corners=False)
        for mirrored in [False, True] if flip else [False]:
            logits = module(scaled.flip(-1) if mirrored else scaled).cams[0]  # (C + 1, h, w)
            probabilities = torch.exp(logits) / torch.exp(logits).sum(0, keepdim=True)
            upsampled = F.interpolate(
                probabilities[None], (height, width), mode="bilinear", align_corners=False
            )[0]
            foreground = upsampled[:NUM_CLASSES] * labels[:, None, None]
            total += foreground.flip(-1) if mirrored else foreground
    tagged = labels.nonzero().flatten()
    return tagged, total[tagged] / total[tagged].flatten(1).amax(-1)[:, None, None]


@pytest.mark.slow
def test_eps_cam_inference_matches_the_published_recipe(compose_train_config):
    module = instantiate(compose_train_config("model=eps").model).eval()
    scales = (0.5, 1.0, 1.5)
    predictor = CAMPredictor(module, scales=scales, flip=True)
    batch = eps_batch(batch_size=1, size=48)
    with torch.no_grad():
        classes, scores = tagged_class_scores(predictor(batch["image"])[0], batch["labels"][0])
        expected_classes, expected = reference_eps_inference(
            module, batch["image"][0], batch["labels"][0], scales, True
        )
    assert classes.tolist() == expected_classes.tolist() == [0, 3]
    torch.testing.assert_close(scores, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("experiment", "crop", "batch", "lam", "long_side"),
    [("voc_rca_eps", 448, 8, 0.5, (256, 512)), ("coco_rca_eps", 321, 16, 0.9, (256, 448))],
)
@pytest.mark.slow
def test_published_eps_experiments_carry_eps_settings(experiment, crop, batch, lam, long_side):
    register_resolvers()
    for method in ("rca_eps", "eps"):
        overrides = [f"experiment={experiment}", "model.net.backbone.pretrained=false", "data.root=/real"]
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("train", overrides=[*overrides, *([] if method == "rca_eps" else ["model=eps"])])
        assert cfg.model._target_.endswith("EPSLitModule")
        assert (cfg.data.image_size, cfg.data.batch_size) == (crop, batch)
        low, high = cfg.data.scale_range
        assert (round(low * crop), round(high * crop)) == long_side
        assert list(cfg.data.color_jitter) == [0.3, 0.3, 0.3, 0.1]
        assert (cfg.model.saliency_loss.tau, cfg.model.saliency_loss.lam) == (0.4, lam)
        assert cfg.model.lr_schedule == "poly" and cfg.model.poly_power == 0.9
        assert cfg.model.optimizer.lr == 0.01 and cfg.model.lr_multipliers.new_weight == 10.0
        assert cfg.model.net.backbone.output_stride == 8 and cfg.model.net.head_depth == 0
        assert cfg.model.net.aggregation == (method == "rca_eps")
    module = instantiate(cfg.model)  # plain EPS on the wide ResNet, untrained weights
    assert module.net.backbone.out_channels == 2048
    assert module(torch.randn(1, 3, 64, 64)).cams.shape == (1, len(cfg.data.class_names) + 1, 8, 8)


@pytest.mark.slow
def test_poly_schedule_decays_every_step_to_zero(compose_train_config):
    cfg = compose_train_config("model=eps", "model.lr_schedule=poly", "model.optimizer.lr=0.1")
    module = instantiate(cfg.model)
    datamodule = instantiate(cfg.data)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    seen = []

    class Recorder(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer.callbacks.append(Recorder())
    trainer.fit(module, datamodule=datamodule)
    total = 4  # 2 epochs of 2 batches
    expected = [0.1 * (1 - step / total) ** 0.9 for step in range(total)]
    assert seen == pytest.approx(expected)
    assert trainer.lr_scheduler_configs[0].interval == "step"
