"""Upstream behaviour that no public API offers, one module per library, each guarded by a test naming it.
torchvision's is the import hook of :mod:`rca_lightning.compat`, installed into site-packages where needed."""
