import math

import pytest

from magkit.data import load_dataset
from magkit.eval import mean_std, repeat
from magkit.methods import create


def test_mean_std_is_sample_std():
    m, s = mean_std([1.0, 2.0, 3.0])
    assert m == 2.0 and s == pytest.approx(1.0)
    assert mean_std([0.5]) == (0.5, 0.0)
    assert all(math.isnan(v) for v in mean_std([]))


def test_repeat_redraws_label_rate_splits_per_seed():
    g = load_dataset("synthetic")
    seen = []

    class Spy:
        def __init__(self, seed):
            self.est = create("sgc-early", seed=seed, epochs=30)

        def fit(self, graph, progress=None):
            seen.append(graph.train_mask.nonzero().flatten().tolist())
            self.est.fit(graph)
            self.history_ = self.est.history_
            return self

        def score(self, graph, split):
            return self.est.score(graph, split)

    res = repeat(Spy, g, seeds=[0, 1], split="rate:0.05")
    assert len(seen[0]) == len(seen[1]) == 100 and seen[0] != seen[1]
    # the input graph is left untouched
    assert int(g.train_mask.sum()) == 1200
    s = res.summary()
    assert set(s) >= {"val_acc", "test_acc", "test_f1"} and 0.2 < s["test_acc"]["mean"] <= 1
    assert res.fmt("test_acc").count("±") == 1


def test_repeat_same_seed_same_numbers():
    g = load_dataset("synthetic")
    a = repeat(lambda s: create("gcn-early", seed=s, epochs=30), g, seeds=[3])
    b = repeat(lambda s: create("gcn-early", seed=s, epochs=30), g, seeds=[3])
    assert a.runs[0].test_acc == b.runs[0].test_acc and a.runs[0].val_f1 == b.runs[0].val_f1
