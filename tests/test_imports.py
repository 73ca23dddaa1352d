"""The package's import graph: no cycles, and layers that only point down.

Every ``import`` and ``from ... import`` statement of every module under
``big_contrast/`` counts, those inside functions included (a function-level
import still ties the two modules together). Relative imports are resolved; a
``from package import name`` is an edge to ``package.name`` when that is a
module, else to the package's ``__init__``.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "big_contrast"

# Layer rules, checked on every edge of the graph:
#   (importer, "only", targets):  modules under `importer` import, from big_contrast,
#                                 only modules under one of `targets`;
#   (importer, "never", targets): modules under `importer` import no module under `targets`.
# "Under" a name means the module itself or anything inside its package.
# The layers, bottom up: losses, data, sharding → models → tasks, objectives, optim,
# microbatch, checkpoint → state → evaluate → config_lib → train (launch beside it).
TRAINER = ("big_contrast.train", "big_contrast.launch", "big_contrast.config_lib")
LAYERS = [
  ("big_contrast.losses", "only", ("big_contrast.losses",)),
  ("big_contrast.data", "only", ("big_contrast.data",)),
  ("big_contrast.sharding", "only", ("big_contrast.sharding",)),
  ("big_contrast.models", "only", ("big_contrast.models", "big_contrast.losses")),
  ("big_contrast.objectives", "never", ("big_contrast.state", "big_contrast.evaluate", *TRAINER)),
  ("big_contrast.tasks", "never", ("big_contrast.state", "big_contrast.evaluate", *TRAINER)),
  ("big_contrast.state", "never", ("big_contrast.evaluate", *TRAINER)),
  # Evaluators are handed an encoder; only the CLI (__main__) uses launch's start-up.
  ("big_contrast.evaluate", "never", ("big_contrast.train", "big_contrast.config_lib")),
  # Converters sit above the models, the train state and checkpoints; nothing imports them.
  ("big_contrast.interop", "never", ("big_contrast.train", "big_contrast.launch")),
  ("big_contrast.launch", "only", ()),
  ("big_contrast.config_lib", "never", ("big_contrast.train", "big_contrast.launch")),
]


def _under(module: str, prefix: str) -> bool:
  return module == prefix or module.startswith(prefix + ".")


def _modules() -> dict[str, pathlib.Path]:
  """Module name -> file, for every .py under big_contrast/ (a package is its __init__)."""
  out = {}
  for path in sorted(ROOT.rglob("*.py")):
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    if parts[-1] == "__init__":
      parts = parts[:-1]
    out[".".join(parts)] = path
  return out


def _known(name: str, modules: dict[str, pathlib.Path]) -> str | None:
  """``name``, or the nearest enclosing module we have, if it is big_contrast's."""
  while name:
    if name in modules:
      return name
    name = name.rpartition(".")[0]
  return None


def _imports(module: str, path: pathlib.Path, modules: dict[str, pathlib.Path]) -> set[str]:
  """The big_contrast modules that ``module`` imports anywhere in its file."""
  package = module if path.name == "__init__.py" else module.rpartition(".")[0]
  found = set()
  for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = package.split(".")
        base = base[: len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
      else:
        source = node.module
      names = [
        f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
        for alias in node.names
      ]
    else:
      continue
    found.update(t for t in (_known(n, modules) for n in names) if t)
  found.discard(module)
  return found


def _graph() -> dict[str, set[str]]:
  modules = _modules()
  return {name: _imports(name, path, modules) for name, path in modules.items()}


GRAPH = _graph()


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """The strongly connected components with more than one module (Tarjan), each sorted."""
  index: dict[str, int] = {}
  low: dict[str, int] = {}
  stack: list[str] = []
  on_stack: set[str] = set()
  components = []

  def visit(v: str) -> None:
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        components.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return components


def _a_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
  """One concrete cycle through the component's first module: [a, b, ..., a]."""
  start, members = component[0], set(component)
  paths = {start: [start]}
  frontier = [start]
  while frontier:
    nxt = []
    for v in frontier:
      for w in sorted(graph[v] & members):
        if w == start:
          return paths[v] + [start]
        if w not in paths:
          paths[w] = paths[v] + [w]
          nxt.append(w)
    frontier = nxt
  raise AssertionError(f"no cycle through {start} in {component}")


def test_the_graph_sees_top_level_function_level_and_relative_imports():
  assert "big_contrast.data.sources" in GRAPH["big_contrast.data.pipeline"]
  assert "big_contrast.data.lee" in GRAPH["big_contrast.data.bundled"]
  assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# One test per part of the package (a subpackage, or a top-level module), so a
# failure names the part whose imports go round in a circle.
PARTS = sorted({".".join(name.split(".")[:2]) for name in GRAPH if name != "big_contrast"})


@pytest.mark.parametrize("part", PARTS)
def test_no_import_cycle_passes_through(part):
  cycles = [c for c in _cycles(GRAPH) if any(_under(m, part) for m in c)]
  assert not cycles, "import cycles: " + "; ".join(
    f"{' -> '.join(_a_cycle(GRAPH, c))} (modules in the cycle: {', '.join(c)})" for c in cycles
  )


@pytest.mark.parametrize(("importer", "rule", "targets"), LAYERS, ids=[r[0] for r in LAYERS])
def test_layers_only_point_down(importer, rule, targets):
  assert rule in ("only", "never"), rule
  broken = []
  for module, imported in sorted(GRAPH.items()):
    if not _under(module, importer):
      continue
    for target in sorted(imported):
      inside = any(_under(target, t) for t in targets)
      if (rule == "only" and not inside) or (rule == "never" and inside):
        broken.append(f"{module} imports {target}")
  assert not broken, f"{importer} may import {rule} {list(targets)}, but: " + "; ".join(broken)
