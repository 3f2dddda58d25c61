import numpy as np
import pytest
import torch

from magkit.data import kshot_split, label_rate_split, parse_split, ratio_split
from magkit.exceptions import ConfigError


def test_ratio_split_matches_magb_rule():
    n = 17074
    tr, va, te = ratio_split(n)
    ids = np.arange(n)
    np.random.RandomState(42).shuffle(ids)
    assert tr.sum() == int(n * 0.6) and va.sum() == int(n * (0.6 + 0.2)) - int(n * 0.6)
    assert torch.equal(tr.nonzero().flatten(), torch.as_tensor(np.sort(ids[: int(n * 0.6)])))
    assert not (tr & va).any() and not (tr & te).any() and (tr | va | te).all()


def test_label_rate_split_is_stratified_and_seeded():
    y = torch.arange(5000) % 10
    y[:300] = 9  # imbalance
    tr, va, te = label_rate_split(y, 0.05, seed=0)
    assert abs(int(tr.sum()) - 250) <= 10
    assert torch.bincount(y[tr], minlength=10).min() >= 1
    base_tr, base_va, base_te = ratio_split(5000)
    assert not (tr & ~base_tr).any() and torch.equal(va, base_va) and torch.equal(te, base_te)
    tr2, _, _ = label_rate_split(y, 0.05, seed=1)
    assert not torch.equal(tr, tr2)
    assert torch.equal(tr, label_rate_split(y, 0.05, seed=0)[0])


def test_tiny_label_rate_keeps_one_per_class():
    y = torch.arange(1000) % 20
    tr, _, _ = label_rate_split(y, 0.001, seed=0)
    assert torch.bincount(y[tr], minlength=20).tolist() == [1] * 20


def test_kshot():
    y = torch.arange(3000) % 6
    tr, _, _ = kshot_split(y, 5, seed=3)
    assert torch.bincount(y[tr], minlength=6).tolist() == [5] * 6


@pytest.mark.parametrize("spec", ["nonsense", "rate:abc", "kshot:", "random:x/y"])
def test_bad_split_specs(spec):
    with pytest.raises(ConfigError, match="allowed: magb, random"):
        parse_split(spec)


def test_bad_ratios():
    with pytest.raises(ConfigError, match="train=0.9, val=0.2"):
        ratio_split(10, 0.9, 0.2)
    with pytest.raises(ConfigError, match="label rate"):
        label_rate_split(torch.zeros(10, dtype=torch.long), 0.9)


def test_kshot_without_labelled_training_nodes_is_a_config_error():
    import pytest

    from magkit.data.splits import kshot_split
    from magkit.exceptions import ConfigError

    with pytest.raises(ConfigError, match="kshot:3 found no labelled node"):
        kshot_split(torch.full((20,), -1, dtype=torch.long), 3, num_classes=2)
