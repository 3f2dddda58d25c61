"""``magkit data list|info|generate`` and ``magkit encode``: inspect, generate and encode datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from . import RootOpt, SplitOpt, app, check_split, console, data_app, err_console, friendly
from ._render import progress_bar


def info_tables(info: dict) -> list[Table]:
    """Rich tables for a graph's :func:`~magkit.data.graph.describe` output."""
    t = Table(title=f"dataset {info['name']}", show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value")
    t.add_row("nodes", f"{info['nodes']:,}")
    t.add_row("edges", f"{info['edges_undirected']:,} undirected ({info['edges_directed']:,} directed)")
    t.add_row("mean degree", f"{info['mean_degree']:.2f} ({info['isolated_nodes']:,} isolated nodes)")
    t.add_row("classes", str(info["classes"]))
    t.add_row("edge homophily", f"{info['homophily']:.3f}")
    sizes = info["class_sizes"]
    t.add_row("class sizes", f"min {min(sizes):,}, max {max(sizes):,} (balance {info['class_balance']:.3f})")
    t.add_row("splits", ", ".join(f"{k} {v:,}" for k, v in info["splits"].items()))
    t.add_row("checksum", info["checksum"])
    m = Table(title="modalities")
    for col in ("modality", "dim", "present", "present %"):
        m.add_column(col, justify="right" if col != "modality" else "left")
    for name, d in info["modalities"].items():
        m.add_row(name, str(d["dim"]), f"{d['present']:,}", f"{100 * d['present'] / info['nodes']:.1f}")
    tables = [t, m]
    if "ground_truth" in info:
        g = Table(title="ground truth (generator)")
        for col in ("modality", "mean quality", "biased %"):
            g.add_column(col)
        for name, d in info["ground_truth"].items():
            biased = "-" if d["biased_fraction"] is None else f"{100 * d['biased_fraction']:.1f}"
            g.add_row(name, f"{d['mean_quality']:.3f}", biased)
        tables.append(g)
    return tables


@data_app.command("info")
@friendly
def data_info(
    dataset: Annotated[str, typer.Argument(help="Dataset name, e.g. synthetic, grocery-semi:text-dominant, magb:Grocery.")],
    root: RootOpt = None,
    split: SplitOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
):
    """Print nodes, edges, classes, modalities (dims, presence), splits, homophily and class balance."""
    import json

    from ..data import describe, load_dataset

    check_split(split)
    graph = load_dataset(dataset, root=root, split=split)
    info = describe(graph)
    if json_out:
        console.print_json(json.dumps(info))
        return
    for table in info_tables(info):
        console.print(table)


@data_app.command("list")
def data_list():
    """List the dataset names magkit understands."""
    from ..data import dataset_names

    for name in dataset_names():
        console.print(name)


@data_app.command("generate")
@friendly
def data_generate(
    out: Annotated[Path, typer.Option("--out", help="Folder to write (mmap:DIR layout); reused when it holds the same graph.")],
    nodes: Annotated[int, typer.Option("--nodes", help="Number of nodes.")] = 1_000_000,
    classes: Annotated[int, typer.Option("--classes", help="Number of classes (communities).")] = 20,
    degree: Annotated[float, typer.Option("--degree", help="Target mean degree.")] = 15.0,
    homophily: Annotated[float, typer.Option("--homophily", help="Share of edges drawn inside a class.")] = 0.7,
    dims: Annotated[str, typer.Option("--dims", help="Modality widths, e.g. text=128,image=128.")] = "text=128,image=128",
    dtype: Annotated[str, typer.Option("--dtype", help="Stored feature dtype: float16 | float32 | float64.")] = "float16",
    split: Annotated[str, typer.Option("--split", help="Train/val fractions (test: the rest), e.g. 0.1/0.05.")] = "0.1/0.05",
    seed: Annotated[int, typer.Option("--seed", help="Generator seed.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a folder holding a graph of other parameters.")] = False,
):
    """Generate a large multimodal graph straight to disk (features written in chunks; open it as mmap:DIR)."""
    from ..data.largegen import generate_mmap_graph
    from ..exceptions import ConfigError

    try:
        widths = {k.strip(): int(v) for k, v in (part.split("=") for part in dims.split(",") if part.strip())}
    except ValueError:
        raise ConfigError(f"--dims: {dims!r}; allowed: modality=width pairs, e.g. text=128,image=128") from None
    if not widths or any(w < 1 for w in widths.values()):
        raise ConfigError(f"--dims: {dims!r}; allowed: modality=width pairs with widths >= 1, e.g. text=128,image=128")
    try:
        train, val = (float(v) for v in split.split("/"))
    except ValueError:
        raise ConfigError(f"--split: {split!r}; allowed: TRAIN/VAL fractions, e.g. 0.1/0.05") from None
    if dtype not in ("float16", "float32", "float64"):
        raise ConfigError(f"--dtype: {dtype!r}; allowed: float16, float32, float64")
    with err_console.status("generating") as status:
        meta = generate_mmap_graph(out, nodes, num_classes=classes, dims=widths, avg_degree=degree, homophily=homophily,
                                   dtype=dtype, train=train, val=val, seed=seed, overwrite=overwrite,
                                   progress=lambda msg: status.update(msg))
    st = meta["stats"]
    console.print(f"{out}: {meta['num_nodes']:,} nodes, {st['edges_undirected']:,} undirected edges (mean degree "
                  f"{st['mean_degree']:.2f}, homophily {st['edge_homophily']:.3f}), features "
                  f"{st['feature_bytes'] / 2**20:.0f} MiB on disk, generated in {meta['generation_seconds']['total']:.1f} s")
    console.print(f"use it as: --data mmap:{out}")


@app.command("encode")
@friendly
def encode(
    nodes: Annotated[Path, typer.Argument(help="Nodes file (CSV: id, text, image, label).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the cached feature files.")],
    modalities: Annotated[str, typer.Option(help="Comma-separated modalities to encode.")] = "text,image",
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
):
    """Turn raw text and images into cached feature files with the offline encoders.

    A rerun encodes only what changed: the nodes file, an image file (path, size, modification time) or the
    encoder."""
    from ..data.encode import encode_nodes

    with progress_bar() as progress:
        task = progress.add_task("encoding", total=None, info="")

        def tick(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total, info="texts and images" if total else "cached")

        paths = encode_nodes(nodes, out, modalities=tuple(m.strip() for m in modalities.split(",") if m.strip()),
                             batch_size=batch_size, progress=tick)
    for m, p in paths.items():
        console.print(f"{m}: {p}")
