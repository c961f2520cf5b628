"""Post-processing: small stray foreground components are dropped, large pieces of the organ are kept."""

from __future__ import annotations

import pytest
import torch

from lib.transforms.components import drop_small_components


def scores_with(blobs, shape=(40, 36, 30)):
    """Softmax-like scores: background 0.9 everywhere; each (class, slices) blob scored 0.95 for pancreas, 0.97
    for tumour (so a tumour inside the organ wins there)."""
    s = torch.zeros(3, *shape)
    s[0] = 0.9
    for cls, sl in blobs:
        s[(cls, *sl)] = 0.95 if cls == 1 else 0.97
    return s


ORGAN = (1, (slice(5, 20), slice(5, 15), slice(5, 12)))  # 1050 voxels
TUMOUR = (2, (slice(18, 23), slice(8, 12), slice(7, 10)))  # touches the organ: same component
STRAY_PANCREAS = (1, (slice(33, 36), slice(30, 33), slice(25, 28)))  # 27 voxels
STRAY_TUMOUR = (2, (slice(2, 4), slice(30, 32), slice(25, 27)))  # 8 voxels
SECOND_PIECE = (1, (slice(28, 38), slice(20, 30), slice(15, 20)))  # 500 voxels: half the organ, apart from it


def test_stray_blobs_are_dropped_and_the_organ_with_its_tumour_kept():
    scores = scores_with([ORGAN, TUMOUR, STRAY_PANCREAS, STRAY_TUMOUR])
    kept, dropped = drop_small_components(scores, 0.25)
    assert dropped == 2
    label = kept.argmax(0)
    assert (label[ORGAN[1]] > 0).all() and (label[TUMOUR[1]] == 2).all()
    assert (label[STRAY_PANCREAS[1]] == 0).all() and (label[STRAY_TUMOUR[1]] == 0).all()
    before = scores.argmax(0)
    assert int(((label > 0) != (before > 0)).sum()) == 27 + 8  # exactly the two stray blobs' voxels changed
    assert torch.equal(scores.argmax(0), before), "the input scores must not be modified"


@pytest.mark.parametrize("fraction,second_piece_kept", [(0.25, True), (0.5, False), (1.0, False), (0.0, True)])
def test_a_large_second_piece_of_the_organ_is_kept_unless_only_the_largest_is_asked_for(fraction, second_piece_kept):
    scores = scores_with([ORGAN, SECOND_PIECE, STRAY_PANCREAS])
    label = drop_small_components(scores, fraction)[0].argmax(0)
    assert bool((label[SECOND_PIECE[1]] == 1).all()) is second_piece_kept
    assert bool((label[STRAY_PANCREAS[1]] == 1).all()) is (fraction == 0.0)
    assert (label[ORGAN[1]] == 1).all()


def test_single_component_and_empty_prediction_are_left_alone():
    one = scores_with([ORGAN])
    kept, dropped = drop_small_components(one)
    assert dropped == 0 and torch.equal(kept, one)
    empty = scores_with([])
    kept, dropped = drop_small_components(empty)
    assert dropped == 0 and int((kept.argmax(0) > 0).sum()) == 0


def test_diagonal_neighbours_are_one_component():
    """26-connectivity: voxels touching at a corner belong to the same organ."""
    scores = scores_with([(1, (slice(2, 6), slice(2, 6), slice(2, 6))), (1, (slice(6, 8), slice(6, 8), slice(6, 8)))])
    assert drop_small_components(scores, 1.0)[1] == 0
