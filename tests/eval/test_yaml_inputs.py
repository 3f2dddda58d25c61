"""Every YAML input (estimator config, benchmark suite, sweep spec) is read by one helper: a missing file,
invalid YAML or a non-mapping is one ConfigError line naming the file, never a YAML traceback."""

from __future__ import annotations

import pytest

from magkit.bench.spec import load_spec
from magkit.bench.suite import load_suite
from magkit.eval.experiment import load_config
from magkit.exceptions import ConfigError

LOADERS = {"config": load_config, "suite": load_suite, "sweep spec": load_spec}


@pytest.mark.parametrize("what", list(LOADERS))
def test_invalid_yaml_is_one_line_naming_the_file(tmp_path, what):
    bad = tmp_path / "bad.yaml"
    bad.write_text("methods: [gcn-early\nseeds: 0..4\n")  # unclosed flow sequence
    with pytest.raises(ConfigError) as err:
        LOADERS[what](bad)
    msg = str(err.value)
    assert msg.startswith(f"{what} {bad}: not valid YAML (") and "\n" not in msg


@pytest.mark.parametrize("what", list(LOADERS))
def test_missing_file_and_non_mapping(tmp_path, what):
    with pytest.raises(ConfigError, match=rf"^{what}: file '.*nope\.yaml' does not exist$"):
        LOADERS[what](tmp_path / "nope.yaml")
    listed = tmp_path / "list.yaml"
    listed.write_text("- gcn-early\n- sage-early\n")
    with pytest.raises(ConfigError, match=rf"^{what} .*list\.yaml: must hold a mapping.*, not a list$"):
        LOADERS[what](listed)


def test_config_reads_params_and_overrides(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("params: {hidden: 64, lr: 0.005}\n")
    assert load_config(cfg, ["lr=0.01", "dropout=0.2"]) == {"hidden": 64, "lr": 0.01, "dropout": 0.2}


def test_config_with_a_class_converts_and_checks_declared_types(tmp_path):
    from magkit.methods.baselines import FusionClassifier

    cfg = tmp_path / "c.yaml"
    cfg.write_text("params: {hidden: 64, fanouts: [5, 5]}\n")
    got = load_config(cfg, ["lr=1e-3", "patience=null", "backbone=sage"], cls=FusionClassifier)
    assert got == {"hidden": 64, "fanouts": [5, 5], "lr": 0.001, "patience": None, "backbone": "sage"}
    assert type(got["lr"]) is float
    with pytest.raises(ConfigError, match=r"^FusionClassifier: lr='fast' is not a float$"):
        load_config(None, ["lr=fast"], cls=FusionClassifier)
    cfg.write_text("hidden: 6.5\n")
    with pytest.raises(ConfigError, match=r"^config .*c\.yaml: hidden=6\.5 is not an int \(FusionClassifier\)$"):
        load_config(cfg, cls=FusionClassifier)
    cfg.write_text("hiden: 6\n")
    with pytest.raises(ConfigError, match=r"unknown parameter 'hiden' \(did you mean 'hidden'\?\)"):
        load_config(cfg, cls=FusionClassifier)
