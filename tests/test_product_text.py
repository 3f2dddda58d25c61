"""The text a user reads describes what magkit is, not how it was developed.

README.md, docs/*.md, the benchmark pages and the source's docstrings and comments must not carry development
history: numbered work sessions or validation rounds, references to a private specification or design note, or
links to the removed validation log. CHANGELOG.md is exempt (history is its purpose).
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
    r"|\bdesign note\b"
    r"|shared/design"
    r"|graphmnl_rounds",
    re.IGNORECASE,
)


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
    pages += sorted((ROOT / "benchmarks").rglob("*.md")) + sorted((ROOT / "benchmarks").glob("*.yaml"))
    return [p for p in pages if p.name != "CHANGELOG.md"]


def test_history_pattern_catches_history_and_spares_product_text():
    for text in ("since session 22", "sessions 9-10", "the 21st round", "Twentieth round", "the fifth validation round",
                 "the spec's gate", "see the design note", "shared/design/srgm.md", "docs/graphmnl_rounds.md",
                 "the validation log"):
        assert HISTORY.search(text), text
    for text in ("M = round(N d / 2)", "the sweep spec is checked", "redrawn in rounds", "a second structure GNN",
                 "Split spec: magb", "rounded to 2 decimals"):
        assert not HISTORY.search(text), text


def test_pages_speak_to_users():
    pages = _user_pages()
    assert len(pages) >= 8, [str(p) for p in pages]
    hits = _hits(pages)
    assert not hits, f"{len(hits)} development-history phrases in user pages:\n" + "\n".join(hits)


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
