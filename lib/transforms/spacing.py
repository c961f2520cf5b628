"""``Spacingd`` that tolerates non-dict ``<key>_*`` entries in the data dictionary.

MONAI 1.6's ``Spacingd`` calls ``.update()`` on every entry whose name starts with ``"<key>_"`` when the
image came from a NIfTI file, assuming they are meta dicts. MONAI Label puts the string ``image_path``
in every request, so the stock transform fails with ``'str' object has no attribute 'update'``. This
subclass sets such entries aside for the call and puts them back unchanged.
"""

from __future__ import annotations

from monai.transforms import Spacingd


class SafeSpacingd(Spacingd):
    def __call__(self, data, lazy=None):
        d = dict(data)
        prefixes = tuple(f"{k}_" for k in self.keys)
        aside = {k: d.pop(k) for k in list(d) if isinstance(k, str) and k.startswith(prefixes) and not isinstance(d[k], dict)}
        out = super().__call__(d, lazy=lazy)
        out.update(aside)
        return out
