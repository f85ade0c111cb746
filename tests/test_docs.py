"""The README and docs: every `dann-jax` command in them parses, every linked or named path exists."""

import re
import shlex
from pathlib import Path

import pytest

from dann_jax.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _shell_lines(text: str):
  for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
    for line in block.replace("\\\n", " ").splitlines():
      yield line


def _invocations():
  for doc in DOCS:
    for line in _shell_lines(doc.read_text()):
      for part in re.split(r"&&|;", line.split(" #")[0]):
        words = shlex.split(part.replace("$s", "0").replace("$S", "0"))
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
          words = words[1:]  # environment assignments
        if words and words[0] == "dann-jax":
          yield pytest.param(words[1:], id=f"{doc.name}: {' '.join(words)}")


@pytest.mark.parametrize("argv", list(_invocations()))
def test_documented_command_parses(argv):
  build_parser().parse_args(argv)


def test_docs_show_commands():
  assert len(list(_invocations())) >= 15


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_linked_paths_exist(doc):
  for target in re.findall(r"\]\(([^)#]+)\)", doc.read_text()):
    if "://" not in target:
      assert (doc.parent / target).exists(), f"{doc.name} links to {target}"


def _named_paths(text: str):
  """Repository paths written out in prose or commands (`docs/x.md`,
  `experiments/results/table1_paper.{json,md}`), braces expanded."""
  for found in re.findall(r"(?<![\w/.-])((?:experiments|docs|dann_jax|tests|\.ci)/[\w./{},-]*)", text):
    path = found.rstrip("/.,")
    braces = re.search(r"\{([^}]*)\}", path)
    if braces is None:
      yield path
    else:
      for alternative in braces.group(1).split(","):
        yield path[: braces.start()] + alternative + path[braces.end() :]


def test_named_paths_fixture():
  text = "see `experiments/results/table1_paper.{json,md}` and docs/errors.md."
  assert list(_named_paths(text)) == [
    "experiments/results/table1_paper.json",
    "experiments/results/table1_paper.md",
    "docs/errors.md",
  ]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_named_paths_exist(doc):
  """A named path is a file or folder of the repository, or the stem of files
  in it (an output prefix such as `--out experiments/results/paper/x`)."""
  for path in _named_paths(doc.read_text()):
    where = ROOT / path
    assert where.exists() or any(where.parent.glob(where.name + "*")), f"{doc.name} names {path}, which is not here"


def test_readme_is_short():
  assert len((ROOT / "README.md").read_text().splitlines()) <= 150
