"""Collects the English docstrings of Python's standard library (run as an isolated script).

`sources.embedded_documents` runs this file as `python -I -S stdlib_docs.py OUT.json` in a child
process: importing ~500 standard-library modules has side effects (signal handlers, atexit hooks,
terminal escape codes, warnings, module caches) that must not leak into the training process,
and `-I -S` keeps site-packages and environment variables from changing what is found, so the
output depends only on the Python build. This file imports nothing outside the standard library.

Output: a JSON list of cleaned docstrings, in a fixed order (modules sorted by name, then the
module docstring, then its public classes and functions sorted by name, each class followed by
its public members sorted by name), first occurrence kept when a docstring repeats.
"""

import contextlib
import importlib
import inspect
import io
import json
import pkgutil
import sys
import warnings

# Top-level modules never imported: they open a browser (antigravity), print (this), start or
# need a GUI (idlelib, tkinter, turtle, turtledemo), install packages (ensurepip), are the
# regression-test suite (test), or are deprecated shims whose content depends on what else is
# installed (distutils, lib2to3). pydoc_data is read separately, as whole topics.
SKIPPED_MODULES = frozenset({
    "antigravity", "distutils", "ensurepip", "idlelib", "lib2to3", "pydoc_data", "test",
    "this", "tkinter", "turtle", "turtledemo",
})


def _wanted(name: str) -> bool:
  parts = name.split(".")
  if parts[0] in SKIPPED_MODULES:
    return False
  # Private modules hold implementation notes, `__main__` modules run code on import, and test
  # packages hold fixtures rather than documentation.
  return not any(p.startswith("_") or p in ("test", "tests") for p in parts)


@contextlib.contextmanager
def _quiet():
  with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
      contextlib.redirect_stderr(io.StringIO()):
    warnings.simplefilter("ignore")
    yield


def _import(name: str, modules: dict) -> None:
  try:
    with _quiet():
      modules[name] = importlib.import_module(name)
  except BaseException:  # pylint: disable=broad-except
    # Platform-specific modules (winreg, msvcrt, ...) and optional C extensions fail to import
    # on some builds; they are simply not part of this build's documentation.
    pass


def import_stdlib() -> dict:
  """Imports every wanted standard-library module and submodule; returns {name: module}."""
  modules = {}
  for top in sorted(sys.stdlib_module_names):
    if not _wanted(top):
      continue
    _import(top, modules)
    package = modules.get(top)
    if package is None or not hasattr(package, "__path__"):
      continue
    names = [info.name for info in pkgutil.walk_packages(
        package.__path__, top + ".", onerror=lambda _: None)]
    for name in sorted(names):
      if _wanted(name):
        _import(name, modules)
  return modules


def _doc(obj) -> str:
  doc = getattr(obj, "__doc__", None)
  return inspect.cleandoc(doc) if isinstance(doc, str) else ""


def _member_docs(cls) -> list:
  docs = []
  for name in sorted(vars(cls)):
    if name.startswith("_"):
      continue
    member = vars(cls)[name]
    if isinstance(member, (staticmethod, classmethod)):
      member = member.__func__
    if inspect.isroutine(member) or inspect.isdatadescriptor(member):
      docs.append(_doc(member))
  return docs


def module_docs(name: str, module) -> list:
  """Docstrings of a module and of the public classes/functions it defines (not re-exports)."""
  docs = [_doc(module)]
  namespace = vars(module)
  for attr in sorted(namespace):
    obj = namespace[attr]
    if attr.startswith("_") or getattr(obj, "__module__", None) != name:
      continue
    if inspect.isclass(obj):
      docs.append(_doc(obj))
      docs.extend(_member_docs(obj))
    elif inspect.isroutine(obj):
      docs.append(_doc(obj))
  return docs


def collect() -> list:
  modules = import_stdlib()
  docs, seen = [], set()
  with _quiet():  # reading some attributes (typing.io, ...) warns
    for name in sorted(modules):
      for doc in module_docs(name, modules[name]):
        if doc and doc not in seen:
          seen.add(doc)
          docs.append(doc)
  return docs


if __name__ == "__main__":
  # The result goes to a file, not stdout: C extensions may write to file descriptor 1.
  with open(sys.argv[1], "w", encoding="utf-8") as f:
    json.dump({"python": sys.version, "documents": collect()}, f)
