"""Known third-party noise is hidden by the console scripts; the project's own warnings are not."""

import logging
import os
import warnings

from omegaconf import OmegaConf

from rca_lightning.utils.quiet import silence_known_noise
from rca_lightning.utils.resolvers import cpus_at_most, register_resolvers


def test_known_warnings_and_log_lines_are_hidden_others_kept(caplog):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_known_noise()
        warnings.warn("'set_vital' is deprecated, please do not call", UserWarning, stacklevel=1)
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning, stacklevel=1)
        warnings.warn("the backbone checkpoint has unexpected keys", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["the backbone checkpoint has unexpected keys"]
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    with caplog.at_level(logging.INFO, logger=logger.name):
        logger.info("Tip: try installing litlogger to enable LitLogger")
        logger.info("GPU available: False, used: False")
    assert [record.getMessage() for record in caplog.records] == ["GPU available: False, used: False"]


def test_loader_workers_never_exceed_the_cpus():
    register_resolvers()
    cpus = os.cpu_count() or 1
    assert cpus_at_most(cpus + 5) == cpus and cpus_at_most(1) == 1 and cpus_at_most(0) == 0
    assert OmegaConf.create({"workers": "${cpus_at_most:1000}"}).workers == cpus
