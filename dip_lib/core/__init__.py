"""The thin DIP library: the skip network, inputs, masks, recipes, the fit loop and its checks,
metrics, early stopping, the estimate a user gets before a fit, the data registry. It imports
nothing from ``dip_lib.report`` or ``dip_lib.speed``."""
