"""The house's rules, checked on the source text (issue: one house with three wings).

- Only ``hpjax/hpnet/model.py`` (and the heads' own implementation) knows the
  parameter tree's names: every other module goes through its accessors.
- Every file the project writes goes through :mod:`hpjax.core.io` (one atomic writer).
- The library never imports the checkout-only entry points (``train``, ``evaluate``,
  ``benchmarks``), which are not installed.
- Papers are cited through ``docs/papers.md``, a file of the repository, and every
  ``docs/papers.md §X`` reference names a section that exists.
"""
from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LIBRARY = sorted((ROOT / "hpjax").rglob("*.py"))
CODE = LIBRARY + sorted(p for d in ("train", "evaluate", "benchmarks", "tests")
                        for p in (ROOT / d).rglob("*.py"))


def _rel(p: pathlib.Path) -> str:
  return p.relative_to(ROOT).as_posix()


def test_parameter_names_are_read_only_by_the_model():
  owners = {"hpjax/hpnet/model.py", "hpjax/hpnet/heads.py"}
  pattern = re.compile(r"""\[["'](heads|classifier|extractor)["']\]|["']heads["'] in |"""
                       r"""f["'](conv|bn)\{""")
  offenders = [f"{_rel(p)}:{i}: {line.strip()}" for p in LIBRARY if _rel(p) not in owners
               for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
  assert not offenders, "read the parameter tree through hpjax.hpnet.model:\n" + "\n".join(offenders)


def test_files_are_written_through_the_one_atomic_writer():
  # prepare.py renames a whole prepared folder into place, workdir.py moves a damaged
  # checkpoint folder aside (directories, not files).
  allowed = {"hpjax/core/io.py", "hpjax/data/prepare.py", "hpjax/core/workdir.py"}
  offenders = [f"{_rel(p)}:{i}" for p in LIBRARY if _rel(p) not in allowed
               for i, line in enumerate(p.read_text().splitlines(), 1)
               if re.search(r"\bos\.(replace|rename)\(|\.tmp\{", line)]
  assert not offenders, "write files with hpjax.core.io:\n" + "\n".join(offenders)


def test_library_does_not_import_checkout_only_packages():
  pattern = re.compile(r"^\s*(from|import)\s+(train|evaluate|benchmarks)\b", re.M)
  offenders = [_rel(p) for p in LIBRARY if pattern.search(p.read_text())]
  assert not offenders, offenders


def _anchor(heading: str) -> str:
  """GitHub's anchor of a Markdown heading."""
  text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
  return text.replace(" ", "-")


def test_paper_references_resolve_inside_the_repository():
  papers = ROOT / "docs" / "papers.md"
  assert papers.exists(), "docs/papers.md holds the project's readings of both papers"
  headings = re.findall(r"^#+ (.+)$", papers.read_text(), re.M)
  sections = {m.group(1) for h in headings if (m := re.match(r"([AB]\d+)\.", h))}
  assert {f"A{i}" for i in range(1, 8)} <= sections and {f"B{i}" for i in range(1, 6)} <= sections
  texts = {p: p.read_text() for p in CODE + sorted((ROOT / "docs").glob("*.md"))
           + [ROOT / "README.md"] if p.name != "test_layout.py"}
  stale = [f"{_rel(p)}: {m.group(0)}" for p, t in texts.items()
           for m in re.finditer(r"SPEC\b[^\n]{0,20}", t)]
  assert not stale, "cite docs/papers.md, not a page outside the repository:\n" + "\n".join(stale)
  cited = {(_rel(p), s) for p, t in texts.items()
           for s in re.findall(r"docs/papers\.md §([AB]\d+)", t)}
  missing = sorted(c for c in cited if c[1] not in sections)
  assert not missing, missing
  assert cited, "the code cites its readings"


@pytest.mark.parametrize("name", ["mask_transform", "fit_reference", "score", "bootstrap_pvalue",
                                  "select_per_class"])
def test_public_api_keeps_working(name):
  import hpjax
  assert callable(getattr(hpjax, name))


def test_layout_doc_lists_every_module():
  """docs/layout.md is the newcomer's map: it names every module of the package."""
  text = (ROOT / "docs" / "layout.md").read_text()
  missing = [_rel(p) for p in LIBRARY if p.name != "__init__.py" and _rel(p) not in text]
  assert not missing, f"add to docs/layout.md: {missing}"
