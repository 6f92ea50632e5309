"""Branch pairing between two descriptions of one grid."""

import numpy as np

from gridtune.grids.model import pair_branches


def test_pairs_by_end_buses_either_direction_then_nearest_reactance():
    ends = np.array([[1, 2], [3, 2], [1, 2], [4, 5]])
    x = np.array([0.20, 0.05, 0.10, 0.30])
    other_ends = np.array([[2, 3], [1, 2], [2, 1], [7, 8]])
    other_x = np.array([0.05, 0.10, 0.20, 0.30])
    # 1-2 (0.20) takes the reversed 2-1 row (0.20), not the nearer-listed 1-2 (0.10)
    assert pair_branches(ends, x, other_ends, other_x).tolist() == [2, 0, 1, -1]


def test_parallel_branches_are_paired_in_order_and_each_row_used_once():
    ends = np.array([[1, 2], [1, 2], [1, 2]])
    other = np.array([[1, 2], [1, 2]])
    assert pair_branches(ends, np.full(3, 0.1), other, np.full(2, 0.1)).tolist() == [0, 1, -1]
