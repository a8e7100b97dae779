# -*- test-case-name: tests.test_layout -*-
"""
The shape of the package: subpackages by role, imports pointing one way,
no module over 600 lines, tooling out of the runtime.
"""

from __future__ import annotations

import ast
import os

from twisted.trial.unittest import SynchronousTestCase

import migrator

PACKAGE = os.path.dirname(os.path.abspath(migrator.__file__))
ROOT = os.path.dirname(PACKAGE)

#: Which role may import which (by first component below C{migrator}).
#: A module not named here (tap, _service, __init__...) is the composition
#: root or a leaf and may import the roles.
ALLOWED = {
    "state": {"state", "interfaces", "_twistedinternals", "_reactorinternals", "_version"},
    "takeover": {
        "takeover", "state", "interfaces", "_twistedinternals", "_reactorinternals", "_version"
    },
    "adapters": {"adapters", "state", "interfaces", "_twistedinternals", "_tlsinternals", "_version"},
    "cli": {"cli", "takeover", "interfaces", "_version"},
    "demo": {"demo", "cli", "testing", "state", "takeover", "interfaces", "_version"},
    "console": {"console", "cli", "interfaces", "_version"},
}

#: What must never be imported by anything that runs under twistd migrate.
TOOLING = {"demo", "cli", "console", "_commands"}

#: Modules that run under twistd migrate (the composition root and roles).
RUNTIME_ROOTS = ("tap", "_service")


def _modules() -> dict[str, tuple[str, bool]]:
    found = {}
    for directory, dirs, files in os.walk(PACKAGE):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        rel = os.path.relpath(directory, ROOT).split(os.sep)
        for f in files:
            if f.endswith(".py"):
                name = ".".join(rel + ([] if f == "__init__.py" else [f[:-3]]))
                found[name] = (os.path.join(directory, f), f == "__init__.py")
    return found


def _imports(modules: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """
    Every import of one of C{migrator}'s modules, at any depth (also inside
    functions: a cycle hidden in a function is still a cycle).
    """

    def own(target: str) -> str | None:
        parts = target.split(".")
        while parts:
            if ".".join(parts) in modules:
                return ".".join(parts)
            parts.pop()
        return None

    graph = {}
    for name, (path, isPackage) in modules.items():
        package = name.split(".") if isPackage else name.split(".")[:-1]
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), path)
        edges = set()
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [
                    f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names
                ]
            for target in targets:
                m = own(target)
                if m and m != name:
                    edges.add(m)
        graph[name] = edges
    return graph


def _topLevelImports(modules: dict[str, tuple[str, bool]], name: str) -> set[str]:
    """
    The modules of C{migrator} that module C{name} imports when it is
    imported: its module-level imports (not those in functions, nor under
    C{if TYPE_CHECKING:}), and the packages they are in.
    """
    path, isPackage = modules[name]
    package = name.split(".") if isPackage else name.split(".")[:-1]
    with open(path, "rb") as f:
        tree = ast.parse(f.read(), path)
    found: set[str] = set()
    statements = list(tree.body)
    for node in statements:
        if isinstance(node, ast.If):
            checking = isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
            statements.extend(node.orelse if checking else node.body + node.orelse)
        elif isinstance(node, ast.Try):
            statements.extend(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                statements.extend(handler.body)
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            targets = [f"{mod}.{a.name}" for a in node.names] + [mod]
        for target in targets:
            parts = target.split(".")
            for n in range(1, len(parts) + 1):
                if ".".join(parts[:n]) in modules:
                    found.add(".".join(parts[:n]))
    found.discard(name)
    return found


def _role(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


class LayoutTests(SynchronousTestCase):
    """
    The package's architecture, as the brief states it.
    """

    def setUp(self) -> None:
        self.modules = _modules()
        self.graph = _imports(self.modules)

    def test_noCycles(self) -> None:
        """
        No module of C{migrator} reaches itself through its imports.
        """
        cycles = []
        for start in self.graph:
            seen, stack = set(), [start]
            while stack:
                for nxt in self.graph[stack.pop()]:
                    if nxt == start:
                        cycles.append(start)
                    elif nxt not in seen:
                        seen.add(nxt)
                        stack.append(nxt)
        self.assertEqual(sorted(set(cycles)), [])

    def test_smallModules(self) -> None:
        """
        No module has more than 600 lines.
        """
        big = {}
        for name, (path, _) in self.modules.items():
            with open(path, "rb") as f:
                lines = len(f.read().splitlines())
            if lines > 600:
                big[name] = lines
        self.assertEqual(big, {})

    def test_subpackagesByRole(self) -> None:
        """
        The roles are subpackages: state, takeover, adapters, cli, demo,
        console.
        """
        packages = {n for n, (_, isPackage) in self.modules.items() if isPackage}
        for role in ALLOWED:
            self.assertIn(f"migrator.{role}", packages)

    def test_importsPointOneWay(self) -> None:
        """
        Each role imports only the roles below it: the state machinery
        never imports the takeover protocol or the adapters, the takeover
        protocol and the adapters never import each other, and nothing in
        the runtime imports the tools.
        """
        wrong = []
        for name, edges in self.graph.items():
            role = _role(name)
            if role not in ALLOWED:
                continue
            for target in edges:
                if _role(target) not in ALLOWED[role]:
                    wrong.append(f"{name} -> {target}")
        self.assertEqual(sorted(wrong), [])

    def test_successorStartsWithoutTheIncumbentSide(self) -> None:
        """
        What C{twistd migrate} imports as it starts (the module-level
        imports reachable from C{migrator.tap}, not those in functions or
        for type checkers) leaves out the incumbent's side, which a
        successor imports once it serves: 10 ms of its start; and what it
        needs only later (the restore, at the first batch) or for an
        operator's question, a check, a WebSocket service: 9 ms more.
        """
        reached: set[str] = set()
        stack = ["migrator.tap"]
        while stack:
            name = stack.pop()
            if name in reached:
                continue
            reached.add(name)
            stack.extend(_topLevelImports(self.modules, name))
        self.assertNotIn("migrator.takeover._incumbent", reached)
        self.assertNotIn("migrator.takeover._capturing", reached)
        self.assertNotIn("migrator.state._stream", reached)
        for later in (
            "migrator.state._restore",
            "migrator.state._report",
            "migrator.state._summary",
            "migrator.takeover._check",
            "migrator.adapters._websocket",
        ):
            self.assertNotIn(later, reached)

    def test_toolingNotInRuntime(self) -> None:
        """
        Nothing reachable from C{migrator.tap} or C{migrator._service} (what
        runs under C{twistd migrate}) is a tool: the demo, the load
        generator, the telnet driver or the operator commands.
        """
        reached: set[str] = set()
        stack = [f"migrator.{r}" for r in RUNTIME_ROOTS]
        while stack:
            name = stack.pop()
            if name in reached:
                continue
            reached.add(name)
            stack.extend(self.graph.get(name, ()))
        tools = sorted(n for n in reached if _role(n) in TOOLING)
        self.assertEqual(tools, [])
