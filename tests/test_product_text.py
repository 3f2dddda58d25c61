"""The text a user reads describes what magkit is, not how it was developed.

README.md, docs/*.md, the benchmark pages, suite files and scripts, and the source's docstrings, comments and CLI
text must not carry development history: numbered work sessions or validation rounds, references to a private
specification or design note, links to the removed validation log, git branches ("this branch", "main at <sha>"),
before/after a change, "we tried", "previously", "was N, now M", the "earlier code" or "older defaults". Name a
version instead ("magkit 950816d"). CHANGELOG.md is exempt (history is its purpose), but it must not point at files
outside the repository.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_ORDINALS = (
    "first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|twelfth|thirteenth|fourteenth|"
    "fifteenth|sixteenth|seventeenth|eighteenth|nineteenth|twentieth|twenty-\\w+"
)
HISTORY = re.compile(
    r"\bsessions? \d"  # "session 22", "sessions 9-10"
    r"|\bround \d"  # "round 5"
    r"|\d+(st|nd|rd|th) (validation )?round"  # "21st round"
    rf"|\b({_ORDINALS}) (validation )?rounds?\b"  # "Twentieth round", "fifth validation round"
    r"|\bvalidation (rounds?|log)\b"
    r"|\bthe spec\b|\bthe spec's\b"
    r"|\bdesign notes?\b"
    r"|shared/design"
    r"|graphmnl_rounds"
    # git branches: "(this branch)", "main at 950816d", "the feature branch" (a GNN's branches are not matched)
    r"|\(this branch\)|\bthis (git )?branch(?=\s*[),.;:]|\s*$)"
    r"|\b(git|feature|main|master|development) branch(es)?\b"
    r"|\b(main|master|HEAD) at [0-9a-f]{7,40}\b"
    # before/after/since a change, work periods, sessions, "we tried", "previously"
    r"|\b(before|after|since|until) (this|the|that|a) (change|commit|fix|refactor(ing)?|rewrite|merge|PR|pull request"
    r"|patch)\b"
    r"|\bwork(ing)? periods?\b"
    r"|\b(this|last|previous|next|earlier|later) (work )?session\b"
    r"|\bsince (the )?(last|previous|earlier) (rounds?|sessions?|commits?|changes?|versions?|runs?)\b"
    r"|\bwe (tried|changed|removed|replaced|rewrote|fixed|switched|dropped)\b"
    r"|\bpreviously\b"
    # "was 1,778 MiB, now 1,201", "(was 3)", the "earlier code", the "older defaults"
    r"|\bwas [-−+]?\d[\d.,]*[^.;]{0,40}?\bnow\b|\(was:? [-−+]?[\d`]"
    r"|\b(earlier|older|previous|old) ([\w-]+ )?(code|implementation|defaults?|profiles?|suites?)\b"
    # "peaked at 1,778 MiB before the edge list was checked in chunks"
    r"|\bbefore (the|its) ([\w'-]+ ){1,3}(was|were|became|got) (\w+ed|made|moved|added|removed)\b"
    # a local checkout of another version recorded in a command line
    r"|/tmp/\S*(before|after)",
    re.IGNORECASE,
)

#: CHANGELOG.md may tell history but must not point outside the repository
OUTSIDE = re.compile(r"(?<![\w.])\.\./|(?<![\w.`])/(work|tmp|home|Users|mnt)/|\bshared/|~/")


def _hits(paths: list[Path]) -> list[str]:
    out = []
    for path in paths:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            m = HISTORY.search(line)
            if m:
                out.append(f"{path.relative_to(ROOT)}:{n}: {m.group(0)!r} in {line.strip()[:120]!r}")
    return out


def _user_pages() -> list[Path]:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    pages += sorted((ROOT / "benchmarks").rglob("*.md")) + sorted((ROOT / "benchmarks").rglob("*.yaml"))
    pages += sorted((ROOT / "benchmarks").rglob("*.py"))  # the scripts write the results pages
    return [p for p in pages if p.name != "CHANGELOG.md"]


def test_history_pattern_catches_history_and_spares_product_text():
    for text in ("since session 22", "sessions 9-10", "the 21st round", "Twentieth round", "the fifth validation round",
                 "the spec's gate", "see the design note", "shared/design/srgm.md", "docs/graphmnl_rounds.md",
                 "the validation log"):
        assert HISTORY.search(text), text
    for text in ("--label after (this branch)", "### after (this branch)", "--compare-label before (main at 950816d)",
                 "merged from the feature branch", "measured before this change", "after the refactor",
                 "in this work period", "since the last round", "in the previous session", "we tried a gate",
                 "previously the default", "peak RSS was 1,778 MiB, now 1,201", "epochs (was 3)", "the earlier code",
                 "the older generated profiles", "rows measured under older defaults",
                 "--compare-src /tmp/speed_before/src", "see the design notes",
                 "peaked at 1,778 MiB before the edge list was checked in chunks"):
        assert HISTORY.search(text), text
    for text in ("M = round(N d / 2)", "the sweep spec is checked", "redrawn in rounds", "a second structure GNN",
                 "Split spec: magb", "rounded to 2 decimals",
                 # GraphMNL's branches, files and epochs that are "previous", measurements in the past tense
                 "GraphMNL has text, image and structure branches", "the struct branch's own projection Q",
                 "a branch of a modality absent at node i abstains", "the dominant branch teaches the inferior ones",
                 "every present branch is guided", "per-branch accuracy", "writers that no longer run",
                 "leaves the previous file intact", "the previous epoch's reliability", "older files: one enum value",
                 "computed from an older version of the CSV", "which was 2 to 3 times faster on this CPU",
                 "the bound, measured before and after the fits", "since unpickling can run code",
                 "### magkit 950816d", "OTHER/src: magkit 950816d", "reproducible with magkit 35b6488",
                 "refused before it is built", "replaced before any candidate result was read",
                 "rows are zeroed before any model reads them"):
        assert not HISTORY.search(text), text


def test_pages_speak_to_users():
    pages = _user_pages()
    assert len(pages) >= 8, [str(p) for p in pages]
    hits = _hits(pages)
    assert not hits, f"{len(hits)} development-history phrases in user pages:\n" + "\n".join(hits)


def test_speed_results_name_versions_not_branches():
    """The speed benchmark compares two versions of magkit: its headings and JSON keys name them."""
    md = (ROOT / "benchmarks" / "speed" / "results.md").read_text(encoding="utf-8")
    headings = re.findall(r"^### (.+)$", md, re.MULTILINE)
    assert headings and all(re.fullmatch(r"magkit [0-9a-f]{7}( \+local changes)?", h) for h in headings), headings
    import json

    runs = json.loads((ROOT / "benchmarks" / "speed" / "results.json").read_text(encoding="utf-8"))["runs"]
    assert sorted(runs) == sorted(headings), (sorted(runs), headings)


def test_changelog_stays_inside_the_repository():
    for text in ("see ../shared/design/srgm.md", "/work/main/notes.md", "shared/data/x", "~/notes.md"):
        assert OUTSIDE.search(text), text
    for text in ("`benchmarks/speed/`", "`condense/matching.py`", "`models/seed<S>.safetensors`", "1/2 shards"):
        assert not OUTSIDE.search(text), text
    log = ROOT / "CHANGELOG.md"
    hits = [f"CHANGELOG.md:{n}: {line.strip()[:120]!r}" for n, line in
            enumerate(log.read_text(encoding="utf-8").splitlines(), 1) if OUTSIDE.search(line)]
    assert not hits, "CHANGELOG.md points outside the repository:\n" + "\n".join(hits)
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", log.read_text(encoding="utf-8"))
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, missing


def test_source_speaks_to_users():
    files = sorted((ROOT / "src").rglob("*.py"))
    assert files
    hits = _hits(files)
    assert not hits, f"{len(hits)} development-history phrases in src/:\n" + "\n".join(hits)


def test_readme_is_short_and_runs_the_ci_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 200
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    commands = [line.strip() for line in ci.splitlines() if line.startswith("pip install") and "pytest" in line]
    assert len(commands) == 1, commands
    assert commands[0] in readme, f"README.md lacks the CI test command {commands[0]!r}"
    assert "pip install torch==2.13.0 -e . && magkit demo" in readme


def test_readme_links_resolve():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", readme)
    assert links
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, missing
