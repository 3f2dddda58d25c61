"""Fuzzing every graph reader: truncations, bit flips and field mutations of its files.

For every reader (the MAGB DGL binary, the MM-Graph layout, the own-graph ``files:`` layout, the on-disk
``mmap:`` layout) a mutated copy of a valid dataset must either raise a typed magkit error (a subclass of
:class:`~magkit.exceptions.MagkitError`) or load. What "load" may give depends on the format:

* ``mmap:`` records a sha256 per file and one over ``meta.json``: a mutated copy that loads must be *the same
  graph* (checksum of structure, labels, features, presence and splits; class count, names, modalities).
* MAGB, MM-Graph and ``files:`` are third-party files without digests: a flipped feature value or edge id is a
  legitimately different input, so a mutated copy that loads must pass :func:`~magkit.data.graph.validate`.

The mutation functions are plain functions of a ``pick(lo, hi) -> int`` callback, so that Hypothesis drives
them here and a plain ``random.Random`` can drive them in a counting harness. The default run draws a few
hundred cases in total; ``-m slow`` runs thousands.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from magkit.data import load_dataset
from magkit.data.graph import MultimodalGraph, validate
from magkit.data.magb import magb_structure, parse_dgl_bytes
from magkit.data.mmgraph import load_mmgraph
from magkit.data.ondisk import save_mmap_graph
from magkit.data.splits import apply_split
from magkit.data.synthetic import make_synthetic_mag
from magkit.exceptions import MagkitError

Pick = Callable[[int, int], int]
GROCERY = Path(__file__).parents[1].parent / "shared" / "data" / "magb" / "Grocery" / "GroceryGraph.pt"
_ND_MAGIC = struct.pack("<Q", 0xDD5E40F096B4A13F)


# ---------------------------------------------------------------------- generic byte mutations
def truncate(raw: bytes, pick: Pick) -> bytes:
    """Cut the file at a random length (0 .. len - 1)."""
    return raw[: pick(0, max(0, len(raw) - 1))]


def flip(raw: bytes, pick: Pick, regions: list[tuple[int, int]] | None = None) -> bytes:
    """Flip one bit; half of the time inside ``regions`` (the structural bytes), else anywhere."""
    if not raw:
        return raw
    b = bytearray(raw)
    if regions and pick(0, 1):
        lo, hi = regions[pick(0, len(regions) - 1)]
        at = pick(lo, min(hi, len(b)) - 1)
    else:
        at = pick(0, len(b) - 1)
    b[at] ^= 1 << pick(0, 7)
    return bytes(b)


_SPECIAL_U64 = [0, 1, 2, 3, 7, 2**31, 2**32, 2**62, 2**63 - 1, 2**64 - 1, 10**9, 4096]


def mutate_dgl_word(raw: bytes, pick: Pick, regions: list[tuple[int, int]]) -> bytes:
    """Overwrite an aligned 8-byte word in the structural bytes with a special count (0, -1, 2**63, ...)."""
    b = bytearray(raw)
    lo, hi = regions[pick(0, len(regions) - 1)]
    at = min(pick(lo, hi - 1), len(b) - 8)
    at -= at % 4
    old = struct.unpack_from("<Q", b, at)[0]
    value = [*_SPECIAL_U64, (old + 1) % 2**64, (old - 1) % 2**64][pick(0, len(_SPECIAL_U64) + 1)]
    struct.pack_into("<Q", b, at, value)
    return bytes(b)


def dgl_regions(raw: bytes) -> list[tuple[int, int]]:
    """Byte ranges of a DGL file that are not array payload: headers, counts, names, the trailer."""
    spans, at = [], 0
    while (at := raw.find(_ND_MAGIC, at)) >= 0:
        ndim = struct.unpack_from("<i", raw, at + 24)[0]
        if 0 <= ndim <= 8:
            start = at + 32 + 8 * ndim + 8
            nbytes = struct.unpack_from("<q", raw, start - 8)[0]
            if 0 <= nbytes <= len(raw) - start:
                spans.append((start, start + nbytes))
        at += 8
    regions, prev = [], 0
    for a, b in sorted(spans):
        if a > prev:
            regions.append((prev, a))
        prev = max(prev, b)
    if prev < len(raw):
        regions.append((prev, len(raw)))
    return [(a, b) for a, b in regions if b - a >= 8]


# ---------------------------------------------------------------------- field mutations per file type
_HEADER_BYTES = b" {}:,'()0123456789abcdefxyz<>|\n\x00"


def mutate_npy(raw: bytes, pick: Pick) -> bytes:
    """Rewrite the ``.npy`` header with another shape, dtype or order, keeping the data bytes."""
    fh = io.BytesIO(raw)
    version = np.lib.format.read_magic(fh)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(fh)
    data = raw[fh.tell():]
    shape = list(shape)
    k = pick(0, 5)
    if k == 0 and shape:
        i = pick(0, len(shape) - 1)
        shape[i] = [0, 1, max(0, shape[i] - 1), shape[i] + 1, 10**12, 2 * shape[i]][pick(0, 5)]
    elif k == 1:
        dtype = np.dtype(["<f4", ">f4", "<f8", "<f2", "<i8", ">i8", "<i4", "|u1", "|b1", "<c8"][pick(0, 9)])
    elif k == 2:
        fortran = not fortran
    elif k == 3:
        shape = shape[::-1]
    elif k == 4:
        shape = shape + [1] if pick(0, 1) else shape[:-1]
    else:  # same header, damaged padding/descr text
        head = raw[: len(raw) - len(data)]
        b = bytearray(head)
        at = pick(10, len(b) - 1)
        b[at] = _HEADER_BYTES[pick(0, len(_HEADER_BYTES) - 1)]
        return bytes(b) + data
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": np.lib.format.dtype_to_descr(dtype),
                                              "fortran_order": bool(fortran), "shape": tuple(shape)})
    return out.getvalue() + data


_JSON_VALUES: list = [None, -1, 0, 1, 2, 1e9, 10**12, 2**63, 1.5, "x", "", "../../x", [], [""], {}, True, "text",
                      ["text", "text"], ["a", 1]]


def mutate_json(raw: bytes, pick: Pick) -> bytes:
    """Replace, delete or add a top-level field of a JSON object with an odd value."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return flip(raw, pick)
    if not isinstance(obj, dict) or not obj:
        return raw
    keys = sorted(obj)
    key = keys[pick(0, len(keys) - 1)]
    k = pick(0, 3)
    if k == 0:
        del obj[key]
    elif k == 1:
        obj[f"extra{pick(0, 9)}"] = _JSON_VALUES[pick(0, len(_JSON_VALUES) - 1)]
    elif k == 2 and isinstance(obj[key], int) and not isinstance(obj[key], bool):
        obj[key] += [-1, 1, 10**9][pick(0, 2)]
    else:
        obj[key] = _JSON_VALUES[pick(0, len(_JSON_VALUES) - 1)]
    return json.dumps(obj).encode()


_CELLS = ["", "1.5", "1e9", "-5", "-1", "999999999999", "nan", "x", '"', "0", "1", "2", "n1", " ", "train", "bogus"]


def mutate_csv(raw: bytes, pick: Pick) -> bytes:
    """Replace one cell, or delete, duplicate or swap lines of a CSV file."""
    lines = raw.decode("utf-8", "replace").split("\n")
    body = [i for i, line in enumerate(lines) if line]
    if not body:
        return raw
    i = body[pick(0, len(body) - 1)]
    k = pick(0, 3)
    if k == 0:
        cells = lines[i].split(",")
        j = pick(0, len(cells) - 1)
        cells[j] = _CELLS[pick(0, len(_CELLS) - 1)] if pick(0, 3) else cells[j] + "0"
        lines[i] = ",".join(cells)
    elif k == 1:
        del lines[i]
    elif k == 2:
        lines.insert(i, lines[i])
    else:
        j = body[pick(0, len(body) - 1)]
        lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines).encode()


def mutate_pt(raw: bytes, pick: Pick) -> bytes:
    """Load a plain torch file, change one value's dtype, shape or content, save it again."""
    obj = torch.load(io.BytesIO(raw), weights_only=True)

    def change(t):
        if not isinstance(t, torch.Tensor):
            t = torch.as_tensor(np.asarray(t))
        k = pick(0, 7)
        if k == 0:
            return t.double()
        if k == 1:
            return t.to(torch.int8)
        if k == 2:
            return t[:-1] if t.numel() else t
        if k == 3:
            return t.T if t.dim() == 2 else t.unsqueeze(0)
        if k == 4:
            return t.bool()
        if k == 5:
            t = t.double().clone()
            if t.numel():
                t.view(-1)[pick(0, t.numel() - 1)] = [float("nan"), 1e9, -5.0, 0.5, 1e300][pick(0, 4)]
            return t
        if k == 6:
            return [None, "x", [1, 2], {"a": 1}, 3][pick(0, 4)]
        return torch.cat([t, t[:1]]) if t.numel() else t

    if isinstance(obj, dict) and obj:
        keys = sorted(obj)
        key = keys[pick(0, len(keys) - 1)]
        if pick(0, 4) == 0:
            del obj[key]
        else:
            obj[key] = change(obj[key])
    else:
        obj = change(obj)
    out = io.BytesIO()
    torch.save(obj, out)
    return out.getvalue()


def field_mutation(rel: str, raw: bytes, pick: Pick, regions: list[tuple[int, int]] | None = None) -> bytes:
    if rel.endswith(".npy"):
        return mutate_npy(raw, pick)
    if rel.endswith(".json"):
        return mutate_json(raw, pick)
    if rel.endswith(".csv"):
        return mutate_csv(raw, pick)
    if rel.endswith("Graph.pt"):
        return mutate_dgl_word(raw, pick, regions or [(0, len(raw))])
    return mutate_pt(raw, pick)


KINDS = ("truncate", "flip", "field")


def mutate(rel: str, raw: bytes, kind: str, pick: Pick, regions: list[tuple[int, int]] | None = None) -> bytes:
    """One mutation of kind ``truncate``, ``flip`` or ``field`` of file ``rel`` (its bytes ``raw``)."""
    if kind == "truncate":
        return truncate(raw, pick)
    if kind == "flip":
        if regions is None and rel.endswith(".npy"):
            regions = [(0, min(len(raw), 128))]  # the header, half of the time
        return flip(raw, pick, regions)
    return field_mutation(rel, raw, pick, regions)


# ---------------------------------------------------------------------- the readers and their pristine data
class Reader:
    """A pristine dataset folder, its files to mutate, how to load it, and how strict "loads" must be."""

    name: str
    strict: bool  # True: a mutated copy that loads must equal the original (the format carries digests)

    def build(self, folder: Path) -> None:
        raise NotImplementedError

    def load(self, folder: Path):
        raise NotImplementedError

    def same(self, a, b) -> bool:
        return (a.checksum() == b.checksum() and a.num_classes == b.num_classes and a.class_names == b.class_names
                and a.modalities == b.modalities)  # the name follows the folder (``files:<dir>``)

    def regions(self, rel: str, raw: bytes) -> list[tuple[int, int]] | None:
        return None


class MagbReader(Reader):
    name, strict = "magb", False
    files = ("GroceryGraph.pt",)

    def build(self, folder: Path) -> None:
        shutil.copyfile(GROCERY, folder / "GroceryGraph.pt")
        self._regions = dgl_regions((folder / "GroceryGraph.pt").read_bytes())

    def load(self, folder: Path):
        path = folder / "GroceryGraph.pt"
        ei, y, c = magb_structure(parse_dgl_bytes(path.read_bytes(), path), path)
        g = MultimodalGraph({"one": torch.ones(y.numel(), 1)}, ei, y, num_classes=c, name="magb:Grocery",
                            canonicalize_edges=False)
        return validate(apply_split(g, "magb"))

    def regions(self, rel, raw):
        return self._regions


class MMGraphReader(Reader):
    name, strict = "mmgraph", False
    files = ("ele-fashion/clip_feat.pt", "ele-fashion/nc_edges-nodeid.pt", "ele-fashion/labels-w-missing.pt",
             "ele-fashion/split.pt")

    def build(self, folder: Path) -> None:
        d = folder / "ele-fashion"
        d.mkdir()
        n = 30
        gen = torch.Generator().manual_seed(0)
        torch.save(torch.randn(n, 8, generator=gen), d / "clip_feat.pt")
        ring = [[i, (i + 1) % n] for i in range(n)] + [[i, (i + 7) % n] for i in range(0, n, 3)]
        torch.save(torch.tensor(ring), d / "nc_edges-nodeid.pt")
        labels = (torch.arange(n) % 3).double()
        labels[[4, 11]] = float("nan")
        torch.save(labels, d / "labels-w-missing.pt")
        perm = torch.randperm(n, generator=gen)
        torch.save({"train_idx": perm[:15], "val_idx": perm[15:22], "test_idx": perm[22:]}, d / "split.pt")

    def load(self, folder: Path):
        return validate(load_mmgraph(folder, "ele-fashion"))


class FilesReader(Reader):
    name, strict = "files", False
    files = ("nodes.csv", "edges.csv", "features/text.npy", "features/image.npy", "features/image_present.npy")

    def build(self, folder: Path) -> None:
        n = 40
        rng = np.random.default_rng(0)
        rows = ["id,text,image,label"] + [f"n{i},{'' if i % 9 == 0 else f'text {i}'},img/{i}.jpg,{i % 3}"
                                          for i in range(n)]
        (folder / "nodes.csv").write_text("\n".join(rows) + "\n")
        pairs = {(i, (i + 1) % n) for i in range(n)} | {(i, (i * 7 + 3) % n) for i in range(n)}
        (folder / "edges.csv").write_text("source,target\n" + "".join(f"n{a},n{b}\n" for a, b in sorted(pairs) if a != b))
        (folder / "features").mkdir()
        present = rng.random(n) < 0.5
        np.save(folder / "features" / "text.npy", rng.normal(size=(n, 6)).astype(np.float32))
        np.save(folder / "features" / "image.npy", rng.normal(size=(n, 4)) * present[:, None])
        np.save(folder / "features" / "image_present.npy", present)

    def load(self, folder: Path):
        return load_dataset(f"files:{folder}")  # validated

    def same(self, a, b) -> bool:
        return super().same(a, b) and a.node_id == b.node_id


class MmapReader(Reader):
    name, strict = "mmap", True
    files = ("meta.json", "y.npy", "edge_index.npy", "train_mask.npy", "val_mask.npy", "test_mask.npy",
             "features/text.npy", "features/image.npy", "features/text_present.npy", "features/image_present.npy")

    def build(self, folder: Path) -> None:
        g = make_synthetic_mag(num_nodes=120, num_classes=3, dims={"text": 8, "image": 6}, seed=0)
        save_mmap_graph(g, folder / "g", dtype={"text": "float32", "image": "float16"})
        for f in (folder / "g").iterdir():
            shutil.move(str(f), folder / f.name)
        (folder / "g").rmdir()

    def load(self, folder: Path):
        return load_dataset(f"mmap:{folder}")  # digests checked, validated

    def same(self, a, b) -> bool:
        return super().same(a, b) and a.split_index("train").tolist() == b.split_index("train").tolist()


READERS: dict[str, Reader] = {r.name: r for r in (MagbReader(), MMGraphReader(), FilesReader(), MmapReader())}


# ---------------------------------------------------------------------- one case
class Pristine:
    """A reader's pristine folder and its original load, built once."""

    def __init__(self, reader: Reader, root: Path):
        self.reader = reader
        self.folder = root / reader.name
        self.folder.mkdir(parents=True)
        reader.build(self.folder)
        self.raw = {rel: (self.folder / rel).read_bytes() for rel in reader.files}
        self.regions = {rel: reader.regions(rel, raw) for rel, raw in self.raw.items()}
        self.original = reader.load(self.folder)


def run_case(p: Pristine, pick: Pick) -> tuple[str, str]:
    """Mutate one file of a copy of the pristine folder and load it.

    Returns ``(outcome, description)`` with outcome ``typed`` (a MagkitError), ``same`` (loads, equal to the
    original), ``changed`` (loads and validates but differs), ``noop`` (the mutation left the bytes as they
    were) or ``untyped:<Exception>`` (also a MagkitError whose message spans several lines).
    """
    files = p.reader.files
    rel = files[pick(0, len(files) - 1)]
    kind = KINDS[pick(0, len(KINDS) - 1)]
    raw = p.raw[rel]
    try:
        mutated = mutate(rel, raw, kind, pick, p.regions[rel])
    except Exception as exc:  # noqa: BLE001 - a mutation that cannot apply (e.g. a 0-d tensor): no case
        return "noop", f"{rel} {kind}: mutation not applicable ({type(exc).__name__})"
    what = f"{rel} {kind} ({len(raw)} -> {len(mutated)} bytes)"
    if mutated == raw:
        return "noop", f"{what}: the mutation left the bytes unchanged"
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{p.reader.name}-") as tmp:
        work = Path(tmp) / "d"
        shutil.copytree(p.folder, work)
        (work / rel).write_bytes(mutated)
        try:
            g = p.reader.load(work)
        except MagkitError as exc:
            if "\n" in str(exc):
                return f"untyped:multi-line {type(exc).__name__}", f"{what}: {exc}"
            return "typed", f"{what}: {exc}"
        except Exception as exc:  # noqa: BLE001 - what the fuzzing looks for
            return f"untyped:{type(exc).__name__}", f"{what}: {type(exc).__name__}: {exc}"
        return ("same" if p.reader.same(g, p.original) else "changed"), what


# ---------------------------------------------------------------------- the tests
@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    cache: dict[str, Pristine] = {}

    def get(name: str) -> Pristine:
        if name not in cache:
            if name == "magb" and not GROCERY.is_file():
                pytest.skip(f"real MAGB data not available: {GROCERY} does not exist")
            cache[name] = Pristine(READERS[name], root)
        return cache[name]

    return get


def _fuzz(p: Pristine, budget: int, derandomize: bool) -> None:
    @settings(max_examples=budget, deadline=None, database=None, derandomize=derandomize,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def case(data):
        outcome, what = run_case(p, lambda lo, hi: data.draw(st.integers(lo, max(lo, hi))))
        assert not outcome.startswith("untyped"), f"{p.reader.name}: {outcome}: {what}"
        if p.reader.strict:
            assert outcome != "changed", f"{p.reader.name}: a mutated copy loaded as another graph: {what}"

    case()


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("budget", [
    pytest.param(60, id="fast"),
    pytest.param(1500, id="slow", marks=pytest.mark.slow),
])
def test_mutated_files_give_a_typed_error_or_a_valid_graph(pristine, reader, budget):
    _fuzz(pristine(reader), budget, derandomize=budget <= 100)


def test_the_mutations_change_bytes_and_the_originals_load(pristine):
    """The harness itself: each mutation kind changes its file, and every pristine folder loads and validates."""
    import random

    rng = random.Random(0)
    for name in READERS:
        p = pristine(name)
        assert p.original.num_nodes > 0
        for rel in p.reader.files:
            for kind in KINDS:
                changed = sum(mutate(rel, p.raw[rel], kind, rng.randint, p.regions[rel]) != p.raw[rel] for _ in range(10))
                assert changed >= 5, (name, rel, kind)
