"""An in-memory stand-in for the part of a MONAI Label datastore the next-sample strategies read."""

from __future__ import annotations


class FakeDatastore:
    """``n`` images named by ``id_format``, some labelled; the image infos are plain dicts the tests fill."""

    def __init__(self, n: int, labelled=(), id_format: str = "img{}"):
        self.infos = {id_format.format(i): {} for i in range(n)}
        self.labelled = set(labelled)

    def list_images(self):
        return list(self.infos)

    def get_unlabeled_images(self, label_tag=None, labels=None):
        return [i for i in self.infos if i not in self.labelled]

    def get_image_info(self, image_id):
        return dict(self.infos.get(image_id, {}))
