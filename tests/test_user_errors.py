"""Every user mistake ends in one line on stderr naming the argument, the bad value and what is allowed,
with exit code 2, before any long work (no dataset loaded unless the mistake is in the dataset's name)."""

import time

import pytest
from typer.testing import CliRunner

from magkit.cli import app

runner = CliRunner()

SUITE_OK = "name: tiny\ndatasets: [synthetic]\nseeds: 0\nmethods: [mlp-early]\n"

# (args with {tmp} for the test's folder, a fragment of the expected line, whether loading the data is the check)
CASES = [
    # names: methods, condensers, datasets, profiles, split specs, backbones, executors
    (["fit", "-m", "gcn-erly"], "method: unknown name 'gcn-erly' (did you mean 'gcn-early'?); allowed: mlp-text", False),
    (["fit", "-m", "gcn-early", "-d", "synthetc"], "dataset: unknown name 'synthetc' (did you mean 'synthetic'?); allowed: synthetic", True),
    (["fit", "-m", "gcn-early", "-d", "grocery-sem:balanced"], "(did you mean 'grocery-semi'?)", True),
    (["data", "info", "synthetic:text-dominnt"], "profile: 'text-dominnt' is not a known profile (did you mean 'text-dominant'?); allowed: text-dominant", True),
    (["fit", "-m", "gcn-early", "--split", "magbb"], "split: 'magbb' is not a split spec (did you mean 'magb'?); allowed: magb, random:TRAIN/VAL", False),
    (["fit", "-m", "gcn-early", "--split", "rat:0.1"], "(did you mean 'rate'?)", False),
    (["fit", "-m", "gcn-early", "--split", "rate:1.5"], "label rate: 1.5; allowed: 0 < rate <= 0.6", False),
    (["fit", "-m", "gcn-early", "--split", "kshot:0"], "k-shot: k=0; allowed: k >= 1", False),
    (["fit", "-m", "gcn-early", "--split", "random:0.9/0.5"], "split ratios: train=0.9, val=0.5; allowed: 0 < train, 0 <= val, train + val < 1", False),
    (["condense", "-m", "gcond-y", "-d", "synthetic", "--out", "{tmp}/S.safetensors"], "unknown name 'gcond-y' (did you mean 'gcond-x'?)", False),
    (["evaluate", "{tmp}/none.safetensors", "-d", "synthetic", "--backbones", "gcn,gcnn"], "--backbones: 'gcn,gcnn' (did you mean 'gcn'?); allowed: comma-separated names from gcn, sgc", False),
    (["sweep", "{tmp}/sweep.yaml", "--out", "{tmp}/sw", "--executor", "slurm"], "--executor: 'slurm'; allowed: local, ray", False),
    (["demo", "--methods", "gcn-erly", "--out", "{tmp}/demo"], "method: unknown name 'gcn-erly' (did you mean 'gcn-early'?)", False),
    # seeds
    (["fit", "-m", "gcn-early", "--seeds", "4..1"], "seeds: '4..1'; allowed: a range like 0..4 or a list like 0,1,2", False),
    (["fit", "-m", "gcn-early", "--seeds", "a,b"], "seeds: 'a,b'; allowed: a range like 0..4", False),
    (["demo", "--seeds", "x", "--out", "{tmp}/demo"], "seeds: 'x'; allowed:", False),
    # --set: key, value, type, range
    (["fit", "-m", "gcn-early", "--set", "lr"], "--set: 'lr'; allowed: key=value, e.g. --set lr=0.005", False),
    (["fit", "-m", "gcn-early", "--set", "=3"], "--set: '=3'; allowed: key=value", False),
    (["fit", "-m", "gcn-early", "--set", "hiddn=3"], "unknown parameter 'hiddn' (did you mean 'hidden'?)", False),
    (["fit", "-m", "gcn-early", "--set", "lr=fast"], "lr='fast' is not a float", False),
    (["fit", "-m", "gcn-early", "--set", "monitor=val_auc"], "monitor='val_auc' is not one of 'val_acc', 'val_f1', 'val_loss'", False),
    (["fit", "-m", "gcn-early", "--set", "dropout=1.5"], "dropout=1.5 is out of range; allowed: 0 <= dropout < 1", False),
    (["condense", "-m", "srgm", "-d", "synthetic", "--out", "{tmp}/S.safetensors", "--set", "damping=wet"], "damping", False),
    (["condense", "-m", "srgm", "-d", "synthetic", "--out", "{tmp}/S.safetensors", "--data-set", "space"], "--data-set: 'space'; allowed: key=value, e.g. --data-set space=aligned", False),
    (["condense", "-m", "srgm", "-d", "synthetic", "--out", "{tmp}/S.safetensors", "--data-set", "spac=aligned"], "unknown generator parameter(s) spac (did you mean 'space'?)", True),
    # condense budgets and settings
    (["condense", "-m", "srgm", "-d", "synthetic", "--out", "{tmp}/S.safetensors", "--ratio", "0"], "ratio=0.0; allowed: a share of the training nodes in (0, 1]", False),
    (["condense", "-m", "srgm", "-d", "synthetic", "--out", "{tmp}/S.safetensors", "--ratio", "2"], "ratio=2.0; allowed:", False),
    (["condense", "-m", "srgm", "-d", "synthetic", "--out", "{tmp}/S.safetensors", "--setting", "transductiv"], "setting='transductiv' is not one of 'transductive', 'inductive'", False),
    (["condense", "-m", "srgm", "-d", "synthetic", "--out", "{tmp}/S.safetensors", "--epochs", "-1"], "epochs=-1; allowed: an integer >= 1", False),
    (["condense", "-m", "srgm", "-d", "synthetic", "--out", "{tmp}/S.safetensors", "--split", "rate:7"], "label rate: 7.0; allowed:", False),
    (["condense", "-m", "random", "-d", "synthetic", "--out", "{tmp}/S.safetensors", "--distributed"], "--distributed: random is a coreset", False),
    # devices
    (["fit", "-m", "gcn-early", "--device", "tpu"], "--device: 'tpu'; allowed: auto, cpu, cuda", False),
    (["evaluate", "{tmp}/none.safetensors", "-d", "synthetic", "--device", "tpu"], "--device: 'tpu'; allowed: auto, cpu, cuda", False),
    (["evaluate", "{tmp}/none.safetensors", "-d", "synthetic", "--fast", "--patience", "-1"], "--patience: -1; allowed: an integer >= 1 (validations) or 0 (no early stop)", False),
    (["evaluate", "{tmp}/none.safetensors", "-d", "synthetic", "--fast", "--val-dtype", "half"], "--val-dtype: 'half'; allowed: auto, float32, bfloat16", False),
    (["evaluate", "{tmp}/none.safetensors", "-d", "synthetic", "--patience", "10"], "--patience: 10 applies to the fast protocol only; allowed: --fast with it, or no patience", False),
    (["evaluate", "{tmp}/none.safetensors", "-d", "synthetic", "--eval-every", "5"], "--eval-every: 5 applies to the fast protocol only; allowed: --fast with it", False),
    # output paths: a file where a folder is meant, a folder where a file is meant, unwritable places
    (["fit", "-m", "gcn-early", "--out", "{tmp}/file.txt"], "--out: '{tmp}/file.txt' is an existing file; allowed: a folder (existing or new)", False),
    (["fit", "-m", "gcn-early", "--out", "{tmp}/file.txt/run"], "--out: '{tmp}/file.txt/run' cannot be created: '{tmp}/file.txt' is a file", False),
    (["fit", "-m", "gcn-early", "--out", "/proc/magkit-run"], "--out: '/proc/magkit-run' is not writable", False),
    (["condense", "-m", "srgm", "-d", "synthetic", "--out", "{tmp}"], "--out: '{tmp}' is a folder; allowed: a file path", False),
    (["condense", "-m", "srgm", "-d", "synthetic", "--out", "/proc/S.safetensors"], "--out: '/proc/S.safetensors' is not writable", False),
    (["condense", "-m", "srgm", "-d", "synthetic", "--out", "{tmp}/S.safetensors", "--checkpoint", "{tmp}"], "--checkpoint: '{tmp}' is a folder", False),
    (["evaluate", "{tmp}/none.safetensors", "-d", "synthetic", "--json", "{tmp}"], "--json: '{tmp}' is a folder; allowed: a file path", False),
    (["predict", "--model", "{tmp}/none.pt", "--out", "{tmp}"], "--out: '{tmp}' is a folder; allowed: a file path", False),
    (["demo", "--out", "{tmp}/file.txt"], "--out: '{tmp}/file.txt' is an existing file", False),
    (["sweep", "{tmp}/sweep.yaml", "--out", "{tmp}/file.txt"], "--out: '{tmp}/file.txt' is an existing file", False),
    (["report", "{tmp}/sw", "--out", "{tmp}/file.txt"], "--out: '{tmp}/file.txt' is an existing file", False),
    (["encode", "{tmp}/file.txt", "--out", "/proc/feats"], "--out: '/proc/feats' is not writable", False),
    (["data", "generate", "--out", "{tmp}/file.txt", "--nodes", "100"], "--out: '{tmp}/file.txt' is an existing file", False),
    (["fit", "-m", "gcn-early", "--save-model"], "--save-model writes the models under --out; give --out FOLDER", False),
    # missing or malformed input files
    (["fit", "-m", "gcn-early", "--config", "{tmp}/none.yaml"], "config: file '{tmp}/none.yaml' does not exist", False),
    (["fit", "-m", "gcn-early", "--config", "{tmp}/broken.yaml"], "config {tmp}/broken.yaml: not valid YAML", False),
    (["fit", "-m", "gcn-early", "--config", "{tmp}/list.yaml"], "config {tmp}/list.yaml: must hold a mapping of parameter names to values, not a list", False),
    (["fit", "-m", "gcn-early", "--config", "{tmp}/typo.yaml"], "unknown parameter 'hiden' (did you mean 'hidden'?)", False),
    (["fit", "-m", "gcn-early", "-d", "files:{tmp}/nope"], "dataset 'files:{tmp}/nope': expected {tmp}/nope/nodes.csv", True),
    (["sweep", "{tmp}/none.yaml", "--out", "{tmp}/sw"], "sweep spec: file '{tmp}/none.yaml' does not exist", False),
    (["sweep", "{tmp}/broken.yaml", "--out", "{tmp}/sw"], "not valid YAML", False),
    (["sweep", "{tmp}/sweep.yaml", "--out", "{tmp}/sw", "--shard", "3/2"], "shard: 3/2; allowed: i/n with 0 <= i < n", False),
    (["sweep", "{tmp}/sweep.yaml", "--out", "{tmp}/sw", "--shard", "x"], "--shard: 'x'; allowed: i/n with 0 <= i < n", False),
    (["bench", "run", "{tmp}/none.yaml"], "suite: file '{tmp}/none.yaml' does not exist", False),
    (["bench", "run", "{tmp}/broken.yaml"], "not valid YAML", False),
    (["bench", "run", "{tmp}/sweep.yaml", "--shard", "1/1"], "shard: 1/1; allowed: i/n with 0 <= i < n", False),
    (["report", "{tmp}/nope", "--out", "{tmp}/rep"], "report: '{tmp}/nope' does not exist; allowed: rows files (.jsonl) or sweep folders", False),
    (["evaluate", "{tmp}/none.safetensors", "-d", "synthetic"], "{tmp}/none.safetensors: no such file", False),
    (["evaluate", "{tmp}/file.txt", "-d", "synthetic"], "{tmp}/file.txt: not a readable safetensors file", False),
    (["predict", "--model", "{tmp}/none.pt"], "does not exist", False),
    (["encode", "{tmp}/none.csv", "--out", "{tmp}/feats"], "nodes_path: no such file (got '{tmp}/none.csv'); allowed: an existing CSV file", False),
    (["encode", "{tmp}/file.txt", "--out", "{tmp}/feats", "--modalities", "audio"], "modalities: unknown or empty (got ['audio']); allowed: a non-empty subset of ['text', 'image']", False),
    # search: the space file, its keys and values, what to search on, the output folder
    (["search", "synthetic", "--space", "{tmp}/typo.yaml", "--out", "{tmp}/se", "--on", "whole"], "search space {tmp}/typo.yaml: unknown key 'hiden' (did you mean 'hidden'?)", False),
    (["search", "synthetic", "--space", "{tmp}/broken.yaml", "--out", "{tmp}/se", "--on", "whole"], "search space {tmp}/broken.yaml: not valid YAML", False),
    (["search", "synthetic", "--space", "{tmp}/list.yaml", "--out", "{tmp}/se", "--on", "whole"], "must hold a mapping of keys (mode, backbone", False),
    (["search", "synthetic", "--space", "{tmp}/space.yaml", "--out", "{tmp}/se", "--condenser", "kcentre"], "--condenser: 'kcentre' (did you mean 'kcenter'?)", False),
    (["search", "synthetic", "--space", "{tmp}/space.yaml", "--out", "{tmp}/se", "--condenser", "srgm", "--ratio", "3"], "--ratio: 3.0; allowed: 0 < ratio <= 1", False),
    (["search", "synthetic", "--space", "{tmp}/space.yaml", "--out", "{tmp}/se"], "nothing given to search on; allowed: exactly one of --condensed PATH", False),
    (["search", "synthetic", "--space", "{tmp}/space.yaml", "--out", "{tmp}/se", "--on", "all"], "--on: 'all'; allowed: whole", False),
    (["search", "synthetic", "--space", "{tmp}/space.yaml", "--out", "{tmp}/se", "--condensed", "{tmp}/none.safetensors"], "--condensed: '{tmp}/none.safetensors' does not exist", False),
    (["search", "synthetic", "--space", "{tmp}/space.yaml", "--out", "{tmp}/file.txt", "--on", "whole"], "--out: '{tmp}/file.txt' is an existing file", False),
    (["search", "synthetic", "--space", "{tmp}/space.yaml", "--out", "{tmp}/se", "--on", "whole", "--shard", "2/2"], "shard: 2/2; allowed: i/n with 0 <= i < n", False),
    # generator options
    (["data", "generate", "--out", "{tmp}/gen", "--dims", "text=abc"], "--dims: 'text=abc'; allowed: modality=width pairs", False),
    (["data", "generate", "--out", "{tmp}/gen", "--dtype", "int8"], "--dtype: 'int8'; allowed: float16, float32, float64", False),
    (["data", "generate", "--out", "{tmp}/gen", "--split", "0.1"], "--split: '0.1'; allowed: TRAIN/VAL fractions", False),
    (["demo", "--methods", ",", "--out", "{tmp}/demo"], "--methods: ','; allowed: comma-separated method names", False),
    (["data", "info", "magb:Grocery", "--root", "{tmp}/nope"], "--root: '{tmp}/nope' is not a folder; allowed: an existing data folder", False),
    (["fit", "-m", "gcn-early", "--root", "{tmp}/file.txt"], "--root: '{tmp}/file.txt' is not a folder", False),
]


@pytest.fixture()
def files(tmp_path):
    (tmp_path / "file.txt").write_text("not a graph\n")
    (tmp_path / "broken.yaml").write_text("params: [1, 2\n")
    (tmp_path / "list.yaml").write_text("- lr\n- hidden\n")
    (tmp_path / "typo.yaml").write_text("hiden: 16\n")
    (tmp_path / "sweep.yaml").write_text(SUITE_OK)
    (tmp_path / "space.yaml").write_text("backbone: [gcn, sgc]\n")
    (tmp_path / "sw").mkdir()
    return tmp_path


@pytest.fixture()
def loads(monkeypatch):
    """Records every dataset load (the loads still happen)."""
    import magkit.data
    import magkit.data.datasets as ds

    calls = []
    real = ds.load_dataset

    def spy(*args, **kwargs):
        calls.append(args[0] if args else kwargs.get("name"))
        return real(*args, **kwargs)

    monkeypatch.setattr(ds, "load_dataset", spy)
    monkeypatch.setattr(magkit.data, "load_dataset", spy)
    return calls


@pytest.mark.parametrize(("args", "fragment", "data_named"), CASES, ids=[" ".join(c[0])[:70] for c in CASES])
def test_user_mistake_is_one_line_exit_2_before_any_work(args, fragment, data_named, files, loads):
    tmp = str(files)
    args = [a.replace("{tmp}", tmp) for a in args]
    t0 = time.perf_counter()
    res = runner.invoke(app, args)
    elapsed = time.perf_counter() - t0
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    assert lines[0].startswith("error: ")
    assert fragment.replace("{tmp}", tmp) in lines[0]
    assert res.stdout.strip() == ""  # nothing printed as if work had started
    if not data_named:
        assert loads == [], f"a dataset was loaded before the mistake was reported: {loads}"
    assert elapsed < 10.0, f"{elapsed:.1f} s before the error"


def test_the_table_covers_at_least_thirty_mistakes():
    assert len(CASES) >= 30
