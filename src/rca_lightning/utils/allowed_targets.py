"""The classes a config read from a run folder may build: exactly those the shipped configs build.

A run folder's ``.hydra/config.yaml`` is data the user points at, and its ``_target_`` names are calls.
They are compared, as written, with the ``_target_`` names of ``rca_lightning/conf/`` (a name is never
imported to be compared, so naming a module runs none of its code). ``tests/test_allow_list.py`` gathers
every ``_target_`` of the shipped configs and checks that they are exactly this set: adding a class to a
shipped config means adding it here too, knowingly. Anything else is trusted only when the user names it on
the command line (``trusted_targets=[my_package.MyNet]``).
"""

from __future__ import annotations

ALLOWED_TARGETS = frozenset(
    {
        # The trainer, its callbacks and loggers.
        "lightning.Trainer",
        "lightning.pytorch.callbacks.LearningRateMonitor",
        "lightning.pytorch.callbacks.ModelCheckpoint",
        "lightning.pytorch.loggers.CSVLogger",
        "lightning.pytorch.loggers.TensorBoardLogger",
        "lightning.pytorch.loggers.WandbLogger",
        "lightning.pytorch.strategies.DDPStrategy",
        "rca_lightning.callbacks.AttentionAccumulationCallback",
        "rca_lightning.callbacks.CAMImageLoggerCallback",
        "rca_lightning.callbacks.RNGStateCallback",
        "rca_lightning.utils.AtomicCheckpointIO",
        # Hydra's own: the settings check and the run-folder claim of every job, the Optuna search's sampler.
        "rca_lightning.utils.SettingsCheck",
        "rca_lightning.utils.run_folder_claim.RunFolderClaim",
        "optuna.samplers.TPESampler",
        # Data.
        "rca_lightning.data.COCODataModule",
        "rca_lightning.data.SyntheticVOCGenerator",
        "rca_lightning.data.VOCDataModule",
        # Methods, networks, losses, the memory bank and optimisers.
        "rca_lightning.lit.BoundaryLitModule",
        "rca_lightning.lit.EPSLitModule",
        "rca_lightning.lit.RCALitModule",
        "rca_lightning.lit.SegLitModule",
        "rca_lightning.losses.EPSSaliencyLoss",
        "rca_lightning.losses.SemanticContrastLoss",
        "rca_lightning.memory.RegionalMemoryBank",
        "rca_lightning.models.BoundaryNet",
        "rca_lightning.models.DeepLabV2",
        "rca_lightning.models.DeepLabV3Plus",
        "rca_lightning.models.RCANet",
        "rca_lightning.models.TimmBackbone",
        "rca_lightning.models.TimmMultiLevelBackbone",
        "torch.optim.AdamW",
        "torch.optim.SGD",
        # Pseudo-mask refiners.
        "rca_lightning.pseudo.CRFRefiner",
        "rca_lightning.pseudo.DenseCRF",
        "rca_lightning.pseudo.IRLabelRefiner",
        "rca_lightning.pseudo.RandomWalkRefiner",
        "rca_lightning.pseudo.SaliencyRefiner",
    }
)

__all__ = ["ALLOWED_TARGETS"]
