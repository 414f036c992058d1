"""The layering the architecture promises, read from the imports of the code itself."""

import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "plugins", "module_utils")
PREFIX = "ansible_collections.virtplane.kvm.plugins.module_utils."


def _imports(path):
    """The module_utils modules ``path`` imports, as 'layer._name' (e.g. 'services._host')."""
    with open(path) as handle:
        tree = ast.parse(handle.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PREFIX):
            base = node.module[len(PREFIX):]
            if "." in base or base.startswith("_"):
                found.add(base)
            for alias in node.names:
                if not base.startswith("_") and "." not in base:
                    found.add("%s.%s" % (base, alias.name))
    return found


def _modules(layer):
    folder = os.path.join(ROOT, layer)
    return {"%s.%s" % (layer, f[:-3]): os.path.join(folder, f) for f in os.listdir(folder)
            if f.endswith(".py") and f != "__init__.py"}


@pytest.mark.parametrize("layer, forbidden", [
    ("engine", ("services", "virt", "scheduler")),
    ("virt", ("services", "engine", "scheduler")),
    ("scheduler", ("services", "engine", "virt")),
    ("fence", ("services", "engine", "virt", "scheduler")),
])
def test_lower_layers_never_import_upper_ones(layer, forbidden):
    for name, path in _modules(layer).items():
        bad = sorted(i for i in _imports(path) if i.split(".")[0] in forbidden)
        assert not bad, "%s imports %s" % (name, bad)


def test_services_import_each_other_without_cycles():
    graph = {name: {i for i in _imports(path) if i.startswith("services.")} for name, path in
             _modules("services").items()}
    visiting, done = set(), set()

    def visit(node, trail):
        if node in done:
            return
        assert node not in visiting, "import cycle: %s" % " -> ".join(trail + [node])
        visiting.add(node)
        for other in graph.get(node, ()):
            visit(other, trail + [node])
        visiting.discard(node)
        done.add(node)

    for name in graph:
        visit(name, [])


def test_sql_lives_in_the_engine_layer():
    for name, path in _modules("services").items():
        with open(path) as handle:
            text = handle.read()
        assert "cur.execute" not in text and "SELECT " not in text, "%s holds SQL" % name
