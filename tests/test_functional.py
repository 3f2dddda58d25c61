"""Metrics in magkit.functional against hand-computed examples."""

from __future__ import annotations

import math

import pytest
import torch

from magkit.functional import accuracy, confusion_matrix, macro_f1

# The running example (5 classes; class 4 is neither in y nor predicted):
#
#   node   0  1  2  3  4  5
#   y      0  0  1  1  2  2
#   pred   0  1  1  1  3  0
#
# class 0: TP=1 (node 0), FP=1 (node 5), FN=1 (node 1)  -> F1 = 2/(2+1+1) = 0.5
# class 1: TP=2 (nodes 2,3), FP=1 (node 1), FN=0        -> F1 = 4/(4+1+0) = 0.8
# class 2: TP=0, FP=0, FN=2 (never predicted)           -> F1 = 0
# class 3: TP=0, FP=1 (node 4), FN=0 (absent from y)    -> F1 = 0
# class 4: TP=FP=FN=0                                   -> left out
# macro-F1 over the union {0,1,2,3} = (0.5 + 0.8 + 0 + 0) / 4 = 0.325
# (over y's classes only it would be 1.3/3 = 0.4333; over all five, 1.3/5 = 0.26)
# accuracy = 3/6 = 0.5 (nodes 0, 2, 3)
Y = torch.tensor([0, 0, 1, 1, 2, 2])
PRED = torch.tensor([0, 1, 1, 1, 3, 0])


def test_accuracy_hand_example():
    assert accuracy(PRED, Y) == pytest.approx(0.5)
    # 4 of 5 right
    assert accuracy(torch.tensor([2, 1, 0, 0, 1]), torch.tensor([2, 1, 0, 0, 0])) == pytest.approx(0.8)


def test_accuracy_takes_scores_and_uses_argmax():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.1, 0.8, 0.1], [0.4, 0.35, 0.25]])
    # argmax = [0, 2, 1, 0]; y = [0, 2, 2, 1] -> 2/4
    assert accuracy(scores, torch.tensor([0, 2, 2, 1])) == pytest.approx(0.5)


def test_accuracy_of_empty_input_is_nan():
    assert math.isnan(accuracy(torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)))


def test_confusion_matrix_hand_example():
    m = confusion_matrix(PRED, Y, num_classes=5)
    expected = torch.zeros(5, 5, dtype=torch.long)
    expected[0, 0] = 1  # node 0
    expected[0, 1] = 1  # node 1
    expected[1, 1] = 2  # nodes 2, 3
    expected[2, 3] = 1  # node 4
    expected[2, 0] = 1  # node 5
    assert torch.equal(m, expected)
    assert int(m.sum()) == Y.numel()


def test_confusion_matrix_rows_are_true_classes_columns_predictions():
    # a single node of true class 2 predicted as 0 lands in M[2, 0], not M[0, 2]
    m = confusion_matrix(torch.tensor([0]), torch.tensor([2]), num_classes=3)
    assert int(m[2, 0]) == 1 and int(m.sum()) == 1


def test_confusion_matrix_accepts_scores():
    scores = torch.nn.functional.one_hot(PRED, 5).float()
    assert torch.equal(confusion_matrix(scores, Y, 5), confusion_matrix(PRED, Y, 5))


def test_macro_f1_over_union_of_true_and_predicted_classes():
    assert macro_f1(PRED, Y, num_classes=5) == pytest.approx(0.325)


def test_macro_f1_perfect_and_all_wrong():
    y = torch.tensor([0, 1, 2, 0])
    assert macro_f1(y.clone(), y, 3) == pytest.approx(1.0)
    # every prediction wrong: TP = 0 for every class -> 0
    assert macro_f1(torch.tensor([1, 2, 0, 1]), y, 3) == pytest.approx(0.0)


def test_macro_f1_second_hand_example():
    # y    = 0 0 0 1 ; pred = 0 0 1 1  (2 classes)
    # class 0: TP=2, FP=0, FN=1 -> 4/5 = 0.8 ; class 1: TP=1, FP=1, FN=0 -> 2/3
    # macro = (0.8 + 0.6667)/2 = 0.7333
    assert macro_f1(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 0, 1]), 2) == pytest.approx(
        (0.8 + 2 / 3) / 2
    )


def test_macro_f1_takes_scores():
    scores = torch.nn.functional.one_hot(PRED, 5).float() * 3.0
    assert macro_f1(scores, Y, 5) == pytest.approx(0.325)


def test_macro_f1_of_empty_input_is_nan():
    assert math.isnan(macro_f1(torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), 3))


def test_macro_f1_matches_scikit_learn_on_random_labels():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        y = torch.randint(0, 6, (40,), generator=g)
        pred = torch.randint(0, 7, (40,), generator=g)  # class 6 never a label
        ref = sklearn_metrics.f1_score(y.numpy(), pred.numpy(), average="macro", zero_division=0)
        assert macro_f1(pred, y, 7) == pytest.approx(ref, abs=1e-12)
        assert accuracy(pred, y) == pytest.approx(sklearn_metrics.accuracy_score(y.numpy(), pred.numpy()))
