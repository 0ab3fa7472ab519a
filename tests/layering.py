"""The import rules of ``docs/ARCHITECTURE.md``, read from the source with ``ast``.

Every ``import`` counts, at module level or inside a function, except those
under ``if TYPE_CHECKING:`` (they never run). Relative imports are resolved.
A module belongs to the first layer whose pattern matches its name; each layer
lists the modules it must never import, so a rule is one line to read.
"""

from __future__ import annotations

import ast
import fnmatch
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

# What the simulator must not touch either: sockets, threads, processes, trio, SQLite.
THREADS_AND_SOCKETS = (
    "socket",
    "select",
    "selectors",
    "ssl",
    "threading",
    "_thread",
    "concurrent",
    "multiprocessing",
    "subprocess",
    "signal",
    "asyncio",
    "trio",
    "zeroconf",
    "sqlite3",
)
# What the pure layers must not touch: those, and clocks, the global random generator,
# the environment and the file system.
NO_IO = (
    *THREADS_AND_SOCKETS,
    "time",
    "datetime",
    "random",
    "secrets",
    "os",
    "sys",
    "io",
    "pathlib",
    "shutil",
    "tempfile",
    "logging",
    "importlib",
)
# The packages, outermost first: what may never reach into a pure layer.
EDGES = (
    "meshnode.runtime",
    "meshnode.store.sqlite",
    "meshnode.store.damage",
    "meshnode.system",
    "meshnode.client",
    "meshnode.sim",
    "meshnode.conformance",
)
OUTSIDE_CORE = ("meshnode.store", "meshnode.engine", *EDGES)


@dataclass(frozen=True)
class Layer:
    name: str
    modules: tuple[str, ...]  # fnmatch patterns of module names
    forbidden: tuple[str, ...]  # module names (and everything below them) it must not import
    lazy: tuple[str, ...] = ()  # of those, the ones it may import inside a function


LAYERS = (
    Layer("entry point", ("meshnode.__main__",), ("trio",)),
    Layer("harness (an edge)", ("meshnode.core.negentropy_harness",), ("trio", *EDGES)),
    Layer("core", ("meshnode.core", "meshnode.core.*"), (*NO_IO, *OUTSIDE_CORE)),
    Layer(
        "store interface",
        (
            "meshnode.store",
            "meshnode.store.base",
            "meshnode.store.standing",
            "meshnode.store.memory",
        ),
        (*NO_IO, *EDGES, "meshnode.engine"),
    ),
    Layer("engine", ("meshnode.engine", "meshnode.engine.*"), (*NO_IO, *EDGES)),
    Layer(
        "store edge",
        ("meshnode.store.sqlite", "meshnode.store.damage"),
        ("trio", "meshnode.engine", "meshnode.runtime", "meshnode.client", "meshnode.sim"),
    ),
    Layer(
        "system",
        ("meshnode.system", "meshnode.system.*"),
        ("trio", "meshnode.runtime", "meshnode.client", "meshnode.sim"),
    ),
    Layer(
        "simulator",
        ("meshnode.sim", "meshnode.sim.*"),
        (
            *THREADS_AND_SOCKETS,
            "meshnode.runtime",
            "meshnode.system",
            "meshnode.client",
            "meshnode.store.sqlite",
        ),
    ),
    Layer(
        "client and CLI",
        ("meshnode.client", "meshnode.client.*"),
        (
            "trio",
            "zeroconf",
            "sqlite3",
            "cryptography",
            "nacl",
            "meshnode.runtime",
            "meshnode.store",
            "meshnode.engine",
            "meshnode.sim",
            "meshnode.core.identity",
            "meshnode.core.record",
            "meshnode.core.handshake",
            "meshnode.core.noise",
            "meshnode.system.offline",
        ),
        lazy=(
            "meshnode.runtime.daemon",  # ``meshnode run`` only: the CLI starts without trio
            "meshnode.system.offline",  # export and import with no daemon: a store, crypto
            "meshnode.system.datadir",  # id with no daemon: the key file
        ),
    ),
    Layer(
        "runtime", ("meshnode.runtime", "meshnode.runtime.*"), ("meshnode.client", "meshnode.sim")
    ),
    Layer(
        "everything else", ("meshnode*",), ("meshnode.runtime", "meshnode.client", "meshnode.sim")
    ),
)


def module_name(root: Path, path: Path) -> str:
    """``meshnode/core/record.py`` under ``root`` (the dir holding ``meshnode``) → its name."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> Layer:
    return next(layer for layer in LAYERS if any(fnmatch.fnmatch(module, p) for p in layer.modules))


@dataclass(frozen=True)
class Import:
    line: int
    names: tuple[str, ...]  # ``from a import b``: a, then a.b (b may be a module)
    in_function: bool


def imports(tree: ast.Module, module: str, is_package: bool) -> Iterator[Import]:
    """Every import that runs, wherever it is."""
    type_only = _inside(tree, lambda n: isinstance(n, ast.If) and _is_type_checking(n.test))
    in_function = _inside(tree, lambda n: isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef))
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        lazy = id(node) in in_function
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(node.lineno, (alias.name,), lazy)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(package, node.module, node.level)
            if base != "__future__":
                for alias in node.names:
                    yield Import(node.lineno, (base, f"{base}.{alias.name}"), lazy)


def _inside(tree: ast.Module, is_block: Callable[[ast.AST], bool]) -> set[int]:
    """The ids of the nodes within blocks ``is_block`` picks (an ``if``: its body only)."""
    found: set[int] = set()
    for block in ast.walk(tree):
        if is_block(block):
            body = block.body if isinstance(block, ast.If) else [block]
            found.update(id(node) for stmt in body for node in ast.walk(stmt))
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(package: str, name: str | None, level: int) -> str:
    if level == 0:
        return name or ""
    parts = package.split(".")
    base = parts[: len(parts) - (level - 1)]
    return ".".join([*base, name] if name else base)


def violations(root: Path) -> list[str]:
    """Every import under ``root/meshnode`` that breaks its layer's rule, as readable lines."""
    found = []
    for path in sorted((root / "meshnode").rglob("*.py")):
        module = module_name(root, path)
        layer = layer_of(module)
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for imported in imports(tree, module, path.name == "__init__.py"):
            if imported.in_function and any(_within(n, layer.lazy) for n in imported.names):
                continue
            broken = next((n for n in imported.names if _within(n, layer.forbidden)), None)
            if broken is not None:
                where = f"{path.relative_to(root)}:{imported.line}"
                found.append(f"{where}: {module} ({layer.name}) imports {broken}")
    return sorted(set(found))


def _within(module: str, names: tuple[str, ...]) -> bool:
    return any(module == name or module.startswith(name + ".") for name in names)
