"""What each console script does, as a function of its composed config (train, CAMs, evaluation, pseudo
masks, boundary network, segmentation, prediction, export); ``cli/`` wraps each in its entry point."""

from rca_lightning.utils.resolvers import register_resolvers

# The packaged configs' resolvers (``${wandb_offline:}``, ...), resolved while a task builds its objects.
register_resolvers()
