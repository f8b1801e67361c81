"""Imports run one way: each package of caopd_jax imports only packages of lower layers, and no module imports
itself back through others. Read from the source (every import statement, function-local ones too)."""

import ast
import collections
import os

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "caopd_jax")

# Low to high: a package may import the packages of the layers below its own.
LAYERS = [
    {"errors"},
    {"files", "run_folder", "metrics", "cli", "compilation_cache", "config_files", "sharding", "tokenizers", "losses", "hardware"},
    {"plots", "models", "calibration"},
    {"weights", "kernels", "rollout", "data"},
    {"distill"},
    {"eval"},
    {"train"},
    {"demo", "convert", "generate"},
]
RANK = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}


def _modules() -> dict[str, set[str]]:
  """module name -> the caopd_jax modules it imports (a `from caopd_jax.x import y` counts as x.y when that is a
  module, else x)."""
  names = set()
  for folder, _, files in os.walk(ROOT):
    for name in files:
      if name.endswith(".py"):
        path = os.path.relpath(os.path.join(folder, name[:-3]), os.path.dirname(ROOT)).replace(os.sep, ".")
        names.add(path.removesuffix(".__init__"))
  imports = collections.defaultdict(set)
  for module in names:
    path = os.path.join(os.path.dirname(ROOT), *module.split(".")) + (
        "/__init__.py" if os.path.isdir(os.path.join(os.path.dirname(ROOT), *module.split("."))) else ".py")
    for node in ast.walk(ast.parse(open(path).read())):
      targets = []
      if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "caopd_jax":
        targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in names else node.module
                   for a in node.names]
      elif isinstance(node, ast.Import):
        targets = [a.name for a in node.names if a.name.split(".")[0] == "caopd_jax"]
      imports[module].update(t for t in targets if t != module)
  return {module: imports[module] for module in names}


def _package(module: str) -> str:
  return module.split(".")[1] if "." in module else module


def test_every_package_has_a_layer():
  assert {_package(m) for m in _modules() if m != "caopd_jax"} == set(RANK)


def test_packages_import_only_lower_layers():
  wrong = sorted(f"{module} -> {target}" for module, targets in _modules().items() for target in targets
                 if module != "caopd_jax" and _package(target) != _package(module)
                 and RANK[_package(target)] >= RANK[_package(module)])
  assert wrong == [], "imports against the layers:\n" + "\n".join(wrong)


def test_no_module_imports_itself_back():
  graph = _modules()
  state, cycles = {}, []

  def visit(module, path):
    state[module] = "open"
    for target in sorted(graph.get(module, ())):
      if target.startswith(module + "."):   # a package importing its own submodules (its __init__)
        continue
      if state.get(target) == "open":
        cycles.append(" -> ".join(path[path.index(target):] + [target]))
      elif target not in state:
        visit(target, path + [target])
    state[module] = "done"

  for module in sorted(graph):
    if module not in state:
      visit(module, [module])
  assert cycles == [], "import cycles:\n" + "\n".join(cycles)
