"""MONAI model-zoo bundles served as downloaded (``--conf bundle``): :mod:`lib.bundles.zoo` reads them."""
