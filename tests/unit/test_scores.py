"""Class-axis reductions must give exactly torch.argmax's answer, ties included."""

import torch

from lib.transforms.scores import class_argmax, foreground


def test_class_argmax_and_foreground_match_torch_argmax_ties_included():
    torch.manual_seed(0)
    for channels in (2, 3, 5):
        scores = torch.randint(0, 4, (channels, 17, 13, 11)).float()  # many exact ties
        scores[:, 0, 0, 0] = 1.0  # all tied: class 0
        expected = scores.argmax(0)
        got = class_argmax(scores)
        assert got.dtype == torch.uint8
        assert torch.equal(got.long(), expected)
        assert torch.equal(foreground(scores), expected > 0)
        view = scores.permute(0, 3, 1, 2)  # not contiguous
        assert torch.equal(class_argmax(view).long(), view.argmax(0))
