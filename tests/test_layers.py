"""The package's imports run one way: data, masking, model at the bottom; train above them;
convert, inference, experiments above train; the command lines (cli.py) on top. The benchmarks
(bench/, beside the package) import it; it never imports them.

Read from the source with `ast` (nothing is imported), so a new import that breaks the layering,
makes a cycle, or hides one inside a function fails here, not in a reader's head.
"""

import ast

from helpers import ROOT

PACKAGE = ROOT / "mlmjax"

# layer -> the layers it may import (its own included).
ALLOWED = {
    "storage": {"storage"},  # paths and URLs (etils epath): below everything that does I/O
    "workdir": {"workdir", "storage"},  # the workdir's layout, resumable keys and lock
    "masking": {"masking"},
    "model": {"model", "masking"},  # dropout's counter hash is the masker's (masking/rng.py)
    "data": {"data", "storage", "workdir", "masking"},
    "config": {"config", "masking"},
    "train": {"train", "storage", "workdir", "model", "masking", "data", "checkpoint", "config"},
    "checkpoint": {"checkpoint", "storage", "workdir"},
    "convert": {"convert", "storage", "model", "data"},  # data: the tokenizer's special roles
    "inference": {"inference", "storage", "workdir", "convert", "train", "checkpoint", "model",
                  "masking", "data"},
    "pretrain": {"pretrain", "train", "convert"},  # the loop from init_from_hf's weights
    "experiments": {"experiments", "storage", "workdir", "pretrain", "inference", "train",
                    "checkpoint", "model", "masking", "data", "config"},
    "cli": {"cli", "storage", "workdir", "experiments", "pretrain", "inference", "convert",
            "train", "checkpoint", "model", "masking", "data", "config"},
}


def layer_of(module: str) -> str:
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else "mlmjax"


def imports() -> list[tuple[str, str, bool]]:
  """(importing module, imported mlmjax module, inside a function) for every import."""
  found = []
  for path in sorted(PACKAGE.rglob("*.py")):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    in_function = set()
    for node in ast.walk(tree):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        in_function.update(id(n) for n in ast.walk(node) if n is not node)
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mlmjax"):
        names = [f"{node.module}.{a.name}" for a in node.names]
        targets = [n for n in names if _is_module(n)] or [node.module]
      elif isinstance(node, ast.Import):
        targets = [a.name for a in node.names if a.name.startswith("mlmjax")]
      else:
        continue
      found += [(module, t, id(node) in in_function) for t in targets]
  return found


def _is_module(name: str) -> bool:
  path = ROOT.joinpath(*name.split("."))
  return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def test_every_layer_imports_only_the_layers_below_it():
  wrong = [(a, b) for a, b, _ in imports()
           if layer_of(b) != "mlmjax" and layer_of(b) not in ALLOWED[layer_of(a)]]
  assert not wrong, wrong


def test_no_import_cycle_between_modules():
  graph = {}
  for a, b, _ in imports():
    if a != b:
      graph.setdefault(a, set()).add(b)

  def reaches(start, goal, seen):
    for nxt in graph.get(start, ()):
      if nxt == goal or (nxt not in seen and not seen.add(nxt) and reaches(nxt, goal, seen)):
        return True
    return False

  cyclic = sorted(m for m in graph if reaches(m, m, set()))
  assert not cyclic, cyclic


def test_no_import_of_the_package_inside_functions():
  hidden = [(a, b) for a, b, inside in imports() if inside]
  assert not hidden, hidden


def test_nothing_imports_the_command_lines():
  assert not [a for a, b, _ in imports() if b == "mlmjax.cli" and a != "mlmjax.cli"]


def test_the_package_never_imports_the_benchmarks():
  found = []
  for path in sorted(PACKAGE.rglob("*.py")):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
               [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
      found += [(path.name, n) for n in names if n.split(".")[0] == "bench"]
  assert not found, found
