"""The import structure the architecture promises (docs/ARCHITECTURE.md), read from the source with `ast`.

- `studio` is the project: settings, shared API plumbing, middleware. It imports no app, so any app can be
  read, tested or removed without the project dragging the others in.
- The apps stand in layers, each importing only those below it: characters, then training, then developer.
  A lower app learns of a higher one's work through signals and registries it owns, never by importing it.
- No two project modules import each other, neither when loaded nor through an import deferred into a
  function: a circle means neither module can be understood, or changed, without the other.
- Each app owns its templates' tags and its models' admin: an app's templates load only its own tag
  libraries (and the project's), and a model is registered in the admin once, by its own app.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from django.contrib import admin

ROOT = Path(__file__).resolve().parent.parent
PROJECT_PACKAGES = ("studio", "characters", "training", "developer")
# Lowest first: an app may import the project (`studio`) and the apps before it, never one after it.
APP_LAYERS = ("characters", "training", "developer")

# The one circle still allowed, through imports deferred into functions: the training services and the
# tasks that run them (`training/services.py` queues `training/tasks.py`, whose tasks call the services).
# It goes when the services are split by concern with enqueueing in a module the tasks do not import;
# a cycle matches when every module in it is one of these or inside them.
ALLOWED_DEFERRED_CYCLE_MODULES = ("training.services", "training.tasks")


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    at_module_level: bool


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _project_modules() -> dict[str, Path]:
    modules = {}
    for package in PROJECT_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" not in path.parts:
                modules[_module_name(path)] = path
    return modules


MODULES = _project_modules()


def _resolve(dotted: str) -> str | None:
    """The project module a dotted name lives in (`training.api.TrainingRunSerializer` -> `training.api`)."""
    while dotted and dotted not in MODULES:
        dotted = dotted.rpartition(".")[0]
    return dotted or None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_names(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    base = node.module or ""
    if node.level:
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, *([node.module] if node.module else [])])
    for alias in node.names:
        yield f"{base}.{alias.name}"


def _imports_of(module: str, path: Path) -> list[Import]:
    """Every project import in the module, marked as run at load time or deferred (inside a function)."""
    found: list[Import] = []

    def visit(nodes: list[ast.stmt], at_module_level: bool) -> None:
        for node in nodes:
            if isinstance(node, ast.Import | ast.ImportFrom):
                for name in _imported_names(module, path, node):
                    target = _resolve(name)
                    if target is not None and target != module:
                        found.append(Import(module, target, node.lineno, at_module_level))
            elif isinstance(node, ast.If) and _is_type_checking(node):
                continue  # for the type checker only: never imported at run time
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(node.body, at_module_level=False)
            else:
                # Classes, conditions, try blocks and the like run their bodies when the module loads.
                for field in ("body", "orelse", "finalbody", "handlers"):
                    children = getattr(node, field, None)
                    if isinstance(children, list):
                        for child in children:
                            if isinstance(child, ast.ExceptHandler):
                                visit(child.body, at_module_level)
                        visit([child for child in children if isinstance(child, ast.stmt)], at_module_level)

    visit(ast.parse(path.read_text(), str(path)).body, at_module_level=True)
    return found


IMPORTS = [found for module, path in MODULES.items() for found in _imports_of(module, path)]


def _cycles(edges: list[Import]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {module: set() for module in MODULES}
    for edge in edges:
        graph[edge.importer].add(edge.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in graph[module]:
            if target not in index:
                connect(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for module in graph:
        if module not in index:
            connect(module)
    return sorted(components)


def _package(module: str) -> str:
    return module.partition(".")[0]


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def test_the_graph_sees_the_project() -> None:
    # Guards the test itself: an empty or blind graph would pass everything below.
    assert {"studio.urls", "characters.models", "training.models", "developer.services"} <= set(MODULES)
    assert any(
        (edge.importer, edge.imported, edge.at_module_level) == ("training.models", "characters.models", True)
        for edge in IMPORTS
    )
    deferred = [edge for edge in IMPORTS if not edge.at_module_level]
    assert deferred, "deferred imports (inside functions) must be seen too"


def test_studio_imports_no_app() -> None:
    offending = [
        f"{edge.importer}:{edge.line} imports {edge.imported}"
        for edge in IMPORTS
        if _package(edge.importer) == "studio" and _package(edge.imported) != "studio"
    ]
    assert offending == [], "include an app's URLs by name and keep app code in its app"


def test_each_app_imports_only_the_apps_below_it() -> None:
    offending = [
        f"{edge.importer}:{edge.line} imports {edge.imported}"
        for edge in IMPORTS
        if _package(edge.importer) in APP_LAYERS
        and _package(edge.imported) in APP_LAYERS
        and APP_LAYERS.index(_package(edge.imported)) > APP_LAYERS.index(_package(edge.importer))
    ]
    assert offending == [], f"the layers are {' < '.join(APP_LAYERS)}"


def test_no_import_cycle_between_project_modules_at_load_time() -> None:
    assert _cycles([edge for edge in IMPORTS if edge.at_module_level]) == []


def test_no_import_cycle_even_through_deferred_imports() -> None:
    cycles = _cycles(IMPORTS)
    unexpected = [
        cycle
        for cycle in cycles
        if not all(_within(module, ALLOWED_DEFERRED_CYCLE_MODULES) for module in cycle)
    ]
    assert unexpected == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    a, b = "training.models", "characters.models"  # any two real modules
    assert _cycles([Import(a, b, 1, True), Import(b, a, 1, False)]) == [sorted([a, b])]


def test_each_apps_templates_load_only_its_own_tag_libraries() -> None:
    # A tag library is its module's name; it belongs to the package it is in.
    owners = {module.rpartition(".")[2]: _package(module) for module in MODULES if ".templatetags." in module}
    assert {"training_tags", "character_pages", "studio_admin"} <= set(owners)
    offending = []
    for template in sorted((ROOT / "templates").rglob("*.html")):
        folder = template.relative_to(ROOT / "templates").parts[0]
        owner = (
            folder if folder in APP_LAYERS else "studio"
        )  # base.html, admin/, registration/: the project's
        for loaded in re.findall(r"{%\s*load\s+(.+?)\s*%}", template.read_text()):
            for library in loaded.split():
                if owners.get(library, owner) not in {owner, "studio"}:
                    offending.append(f"{template.relative_to(ROOT)} loads {library} ({owners[library]})")
    assert offending == [], (
        "draw another app's part through the owner's extension points (characters.page_parts)"
    )


def test_each_model_is_registered_in_the_admin_by_its_own_app() -> None:
    registered = {
        model._meta.label: type(model_admin).__module__ for model, model_admin in admin.site._registry.items()
    }
    assert {"characters.Character", "studio.User", "training.TrainingRun"} <= set(registered)
    offending = [
        f"{label} by {module}"
        for label, module in registered.items()
        if _package(module) in PROJECT_PACKAGES and label.partition(".")[0] != _package(module)
    ]
    assert offending == []
    unregistering = [edge for edge in _attribute_calls("unregister") if _package(edge) in PROJECT_PACKAGES]
    assert unregistering == [], "add to another app's admin with its AdminExtension, never register it again"


def _attribute_calls(attribute: str) -> list[str]:
    """The project modules that call `<something>.<attribute>(...)`."""
    return sorted(
        module
        for module, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == attribute
    )
