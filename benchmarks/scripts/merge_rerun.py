"""Replace a suite's rows for some methods with a complete staging re-run of them.

    python benchmarks/scripts/merge_rerun.py STAGING.yaml MAIN_ROWS.jsonl OLD_ROWS.jsonl [--dry-run]

STAGING.yaml is a suite (e.g. session 10's benchmarks/graphmnl_rerun.yaml, since removed) whose rows are in its results folder
(<suite dir>/<name>/rows.jsonl). Every cell of its grid (dataset x split x method x seed) must be there, once;
otherwise nothing is written and the missing cells are listed. Then the rows of MAIN_ROWS.jsonl for the staging
methods, on the staging grid's datasets, splits and seeds, move to OLD_ROWS.jsonl (which must not exist yet),
and the staging rows take their place (other rows keep their order; the new ones are appended). With
``--dry-run`` only the counts are printed. Re-render afterwards: ``magkit bench run SUITE.yaml --render-only``.
"""

import json
import sys
from pathlib import Path

from magkit.bench.suite import load_suite, read_rows


def main(argv: list[str]) -> int:
    dry = "--dry-run" in argv
    args = [a for a in argv if a != "--dry-run"]
    if len(args) != 3:
        print(__doc__)
        return 2
    staging_yaml, main_path, old_path = Path(args[0]), Path(args[1]), Path(args[2])
    cfg = load_suite(staging_yaml)
    staging_rows = read_rows(staging_yaml.parent / cfg["name"] / "rows.jsonl")
    grid = {(d, s, m, seed) for d in cfg["datasets"] for s in cfg["splits"] for m in cfg["methods"]
            for seed in cfg["seeds"]}
    keys = [(r["dataset"], r["split"], r["method"], r["seed"]) for r in staging_rows]
    missing = sorted(grid - set(keys))
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    extra = sorted(set(keys) - grid)
    if missing or dupes or extra:
        print(f"staging rows incomplete: {len(set(keys) & grid)} of {len(grid)} cells; "
              f"{len(missing)} missing, {len(dupes)} duplicated, {len(extra)} outside the grid")
        for k in missing[:20]:
            print("  missing:", k)
        return 1
    if old_path.exists():
        print(f"{old_path} exists already: pick a new name for the replaced rows")
        return 1
    main_rows = read_rows(main_path)
    replaced = [r for r in main_rows if (r["dataset"], r["split"], r["method"], r["seed"]) in grid]
    kept = [r for r in main_rows if (r["dataset"], r["split"], r["method"], r["seed"]) not in grid]
    print(f"{main_path}: {len(main_rows)} rows; {len(replaced)} replaced by {len(staging_rows)} staging rows "
          f"-> {len(kept) + len(staging_rows)} rows; replaced rows -> {old_path}")
    if dry:
        return 0
    old_path.write_text("".join(json.dumps(r) + "\n" for r in replaced))
    main_path.write_text("".join(json.dumps(r) + "\n" for r in kept + staging_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
