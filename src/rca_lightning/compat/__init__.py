"""The torchvision import hook (``torchvision_ops_hook``, put into site-packages by ``install``): lets
``import torchvision`` succeed when its compiled extension cannot load. Imports no rca_lightning package."""
