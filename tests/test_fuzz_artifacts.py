"""Fuzzing every artifact magkit writes: estimator files, condensed graphs, condensation checkpoints and disk
propagation caches.

Random truncations, bit flips and mutations of the JSON metadata must end in a typed magkit error
(:class:`~magkit.exceptions.MagkitError`) or an unchanged result: never an untyped exception, never a silently
different model. Mutations re-signed with a valid digest (what someone who rewrites the file can do) may load
as a different artifact, but still never raise an untyped exception. The default run is a few hundred examples;
``-m slow`` runs thousands.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from magkit.exceptions import MagkitError
from magkit.integrity import DIGEST_KEY, RECORD_KEY, content_digest

#: outcomes of one corrupted load
TYPED, UNCHANGED, SILENT, UNTYPED, CHANGED = "typed", "unchanged", "silent", "untyped", "changed"


# ---------------------------------------------------------------------------------------------- the artifacts
class Artifact:
    """One artifact on disk: the file to corrupt, its pristine bytes, how to load it and what it loads to
    (``load`` returns the numbers a load yields; ``json_file``: the JSON to mutate is this whole file, the disk
    cache's digest record, not the safetensors metadata)."""

    def __init__(self, name: str, path: Path, original: bytes, load: Callable[[], list], reference: list,
                 json_file: Path | None = None, restore: Callable[[], None] | None = None):
        self.name, self.path, self.original, self.load, self.reference = name, path, original, load, reference
        self.json_file, self.restore = json_file, restore

    def __repr__(self) -> str:
        return f"Artifact({self.name!r}, {self.path.name}, {len(self.original)} bytes)"

    def reset(self) -> None:
        self.path.write_bytes(self.original)
        if self.restore is not None:
            self.restore()

    def outcome(self, data: bytes, target: Path | None = None) -> str:
        """Write ``data`` in place of the file (or of ``target``), load, classify, restore."""
        (target or self.path).write_bytes(data)
        try:
            got = self.load()
        except MagkitError:
            return TYPED
        except Exception as exc:  # noqa: BLE001 - the point: any other exception is a finding
            return f"{UNTYPED}: {type(exc).__name__}: {exc}"
        finally:
            self.reset()
        return UNCHANGED if same(got, self.reference) else SILENT


def same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def tiny_graph():
    from magkit.data.synthetic import make_synthetic_mag

    return make_synthetic_mag(num_nodes=120, num_classes=3, dims=8, seed=0, avg_degree=6.0)


def estimator_artifact(folder: Path, method: str = "graphmnl") -> Artifact:
    from magkit.methods import create, load_estimator

    graph = tiny_graph()
    est = create(method)
    est.set_params(**{k: v for k, v in {"epochs": 3, "hidden": 8, "warmup": 1}.items() if k in est.get_params()})
    est.fit(graph)
    path = est.save(folder / f"{method}.safetensors")

    def load():
        return [load_estimator(path).predict_proba(graph)]

    return Artifact("estimator", path, path.read_bytes(), load, load())


def condensed_artifact(folder: Path) -> Artifact:
    from magkit.condense import CondensedGraph, make_condenser

    cond = make_condenser("gcond", ratio=0.1, epochs=2, outer_steps=2, eval_every=1, eval_epochs=5, hidden=16)
    cg = cond.condense(tiny_graph())
    path = cg.save(folder / "condensed.safetensors")

    def load():
        back = CondensedGraph.load(path)
        return [back.features, back.adj, back.y, back.meta, back.modalities, back.num_classes, back.class_names]

    return Artifact("condensed graph", path, path.read_bytes(), load, load())


def checkpoint_artifact(folder: Path) -> Artifact:
    from magkit.condense import make_condenser

    graph = tiny_graph()
    params = dict(ratio=0.1, epochs=2, outer_steps=1, inner_steps=1, eval_every=1, eval_epochs=3, hidden=8,
                  checkpoint_every=1, structure_epochs=(1, 1))  # checkpoint at epoch 1, stopped in epoch 2
    path = folder / "run.ckpt.safetensors"

    class Stop(Exception):
        pass

    def stop(rec):
        if rec["epoch"] == 2:
            raise Stop

    with pytest.raises(Stop):
        make_condenser("srgm", **params).condense(graph, checkpoint=path, progress=stop)
    original = path.read_bytes()

    def load():
        cg = make_condenser("srgm", **params).condense(graph, checkpoint=path, resume=True)
        path.write_bytes(original)  # the resumed run rewrote it
        return [cg.features, cg.adj, cg.y]

    return Artifact("checkpoint", path, original, load, load())


def diskcache_artifact(folder: Path) -> Artifact:
    from magkit.train.diskprop import propagate_to_disk

    g = torch.Generator().manual_seed(0)
    ei = torch.randint(0, 40, (2, 120), generator=g)
    x = torch.randn(40, 6, generator=g)
    cache = folder / "cache"
    stats: dict = {}
    propagate_to_disk(ei, x, 2, cache, stats=stats)
    npy = Path(stats["path"])
    record = npy.with_name(npy.name + ".sha256")
    saved = {p: p.read_bytes() for p in (npy, record)}

    def restore():
        for p, data in saved.items():
            p.write_bytes(data)

    def load():
        return [propagate_to_disk(ei, x, 2, cache).materialize()]

    return Artifact("disk cache", npy, saved[npy], load, load(), json_file=record, restore=restore)


# ---------------------------------------------------------------------------------------------- corruptions
def truncate(data: bytes, cut: int) -> bytes:
    return data[:cut % max(len(data), 1)]


def flip(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for pos, bit in flips:
        out[pos % len(out)] ^= 1 << bit
    return bytes(out)


def split_safetensors(data: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def join_safetensors(header: dict, tail: bytes) -> bytes:
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + tail


#: replacement values of a JSON mutation
VALUES = [None, True, False, 0, 1, -1, 2, 7, 2**40, -(2**63), 0.5, -1.5, 1e308, "", "x", "text", "__tensor__",
          [], [1], ["text"], {}, {"a": 1}, {"__tensor__": "fitted.0"}, {"__tuple__": [1]}, {"__float__": "nan"}]


def paths_of(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += paths_of(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += paths_of(v, prefix + (i,))
    return out


def mutate_json(record: Any, path: tuple, action: int, value: Any) -> Any:
    """A copy of ``record`` with the node at ``path`` replaced by ``value`` (action 0), deleted (1), or tweaked
    keeping its type (2: numbers +1, strings + "x", lists truncated, bools negated)."""
    record = json.loads(json.dumps(record))
    if not path:
        return value
    parent = record
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    if action == 1:
        del parent[key]
    elif action == 2:
        old = parent[key]
        if isinstance(old, bool):
            parent[key] = not old
        elif isinstance(old, (int, float)):
            parent[key] = old + 1
        elif isinstance(old, str):
            parent[key] = old + "x"
        elif isinstance(old, list):
            parent[key] = old[:-1]
        else:
            parent[key] = value
    else:
        parent[key] = value
    return record


def json_mutation(art: Artifact, pick: int, action: int, value: Any, resign: bool) -> tuple[bytes, Path | None]:
    """The artifact's bytes with one JSON field mutated; ``resign``: with a matching digest."""
    if art.json_file is not None:  # its digest is of the other file: re-signing does not apply
        record = json.loads(art.json_file.read_bytes())
        paths = paths_of(record)
        new = mutate_json(record, paths[pick % len(paths)], action, value)
        return json.dumps(new).encode(), art.json_file
    header, tail = split_safetensors(art.original)
    record = json.loads(header["__metadata__"][RECORD_KEY])
    paths = paths_of(record)
    new = mutate_json(record, paths[pick % len(paths)], action, value)
    text = json.dumps(new, sort_keys=True)
    header["__metadata__"][RECORD_KEY] = text
    if resign:
        from safetensors.torch import load

        header["__metadata__"][DIGEST_KEY] = content_digest(text, load(art.original))
    return join_safetensors(header, tail), None


# ---------------------------------------------------------------------------------------------- fixtures
BUILDERS = {
    "estimator": estimator_artifact,
    "condensed": condensed_artifact,
    "checkpoint": checkpoint_artifact,
    "diskcache": diskcache_artifact,
}


@pytest.fixture(scope="module", params=list(BUILDERS))
def artifact(request, tmp_path_factory):
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp(request.param)
    art = BUILDERS[request.param](folder)
    yield art
    shutil.rmtree(folder, ignore_errors=True)


def check(outcome: str, allow_changed: bool = False) -> None:
    assert not outcome.startswith(UNTYPED), outcome
    if not allow_changed:
        assert outcome != SILENT, "a corrupted artifact loaded as a different one without a word"


FAST = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SLOW = settings(max_examples=600, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

#: positions anywhere, or in the first bytes, where the headers are (safetensors length + JSON, .npy header dict)
flips = st.lists(st.tuples(st.one_of(st.integers(0, 255), st.integers(0, 2**31)), st.integers(0, 7)), min_size=1,
                 max_size=4)
mutation = st.tuples(st.integers(0, 10**6), st.integers(0, 2), st.sampled_from(VALUES))


@FAST
@given(cut=st.integers(0, 2**31))
def test_truncation_is_a_typed_error_or_harmless(artifact, cut):
    check(artifact.outcome(truncate(artifact.original, cut)))


@FAST
@given(flips=flips)
def test_bit_flips_are_a_typed_error_or_harmless(artifact, flips):
    check(artifact.outcome(flip(artifact.original, flips)))


@FAST
@given(m=mutation)
def test_json_mutations_are_a_typed_error_or_harmless(artifact, m):
    data, target = json_mutation(artifact, *m, resign=False)
    check(artifact.outcome(data, target))


@FAST
@given(m=mutation)
def test_resigned_json_mutations_never_raise_an_untyped_error(artifact, m):
    data, target = json_mutation(artifact, *m, resign=True)
    check(artifact.outcome(data, target), allow_changed=True)


@pytest.mark.slow
@SLOW
@given(kind=st.sampled_from(["cut", "flip", "json", "resigned"]), cut=st.integers(0, 2**31), flips=flips,
       m=mutation)
def test_thousands_of_corruptions(artifact, kind, cut, flips, m):
    if kind == "cut":
        check(artifact.outcome(truncate(artifact.original, cut)))
    elif kind == "flip":
        check(artifact.outcome(flip(artifact.original, flips)))
    else:
        data, target = json_mutation(artifact, *m, resign=kind == "resigned")
        check(artifact.outcome(data, target), allow_changed=kind == "resigned")
