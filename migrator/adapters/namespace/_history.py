# -*- test-case-name: tests.test_namespace -*-
"""
Replaying an interactive session's typed history, without running
anything, into the blocks the interpreter ran (L{migrator.adapters.namespace._namespace}):
the interpreter's own compiler groups the lines and remembers
C{__future__} imports; a block that is a single C{def} or C{class}
statement defines that name, with the compiled code that tells which
object it made, and the names the statement needs when it runs.
"""

from __future__ import annotations
import __future__

import ast
import codeop
import types
import warnings
from collections import deque
from collections.abc import Iterable, Sequence

import attrs

CONSOLE = "<console>"
"""The file name the manhole's interpreter compiles the user's lines with."""

_DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _text(line: str | bytes) -> str:
    if isinstance(line, bytes):
        return line.decode("utf-8", "replace")
    return line


def futureFeatures(flags: int) -> list[str]:
    """
    The names of the C{__future__} features that compiler C{flags} turn on.
    """
    return [
        name
        for name in __future__.all_feature_names
        if flags & getattr(__future__, name).compiler_flag
    ]


def futureFlags(names: Iterable[str]) -> int:
    """
    The compiler flags of the C{__future__} features C{names} (those this
    Python knows; the others are mandatory here, or gone).
    """
    flags = 0
    for name in names:
        flag = getattr(getattr(__future__, str(name), None), "compiler_flag", None)
        if isinstance(flag, int):
            flags |= flag
    return flags


@attrs.frozen
class _Block:
    """
    One group of lines the interpreter compiled together (and ran).

    @ivar lines: the lines, the empty one that closed the block included.
    @ivar code: what the interpreter's compiler made of them.
    @ivar futures: the C{__future__} features in effect for them.
    @ivar defines: the name bound, if the block is a single C{def} or
        C{class} statement.
    @ivar node: that statement.
    @ivar codes: every code object compiled from the block.
    @ivar imports: the C{(module, name)} pairs its C{from module import
        name} statements imported.
    """

    lines: tuple[str, ...]
    code: types.CodeType = attrs.field(repr=False)
    futures: tuple[str, ...]
    defines: str | None
    node: ast.stmt | None = attrs.field(eq=False, repr=False)
    codes: list[types.CodeType] = attrs.field(eq=False, repr=False)
    imports: tuple[tuple[str, str], ...] = attrs.field(default=(), eq=False, repr=False)

    @property
    def source(self) -> str:
        return "\n".join(self.lines)


def _codesIn(code: types.CodeType) -> list[types.CodeType]:
    found: list[types.CodeType] = []
    todo = [code]
    while todo:
        for const in todo.pop().co_consts:
            if isinstance(const, types.CodeType):
                found.append(const)
                todo.append(const)
    return found


class _Replay:
    """
    Groups history lines into the blocks the interpreter ran, with the
    interpreter's own compiler (which also remembers C{__future__}
    imports).
    """

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.compiler = codeop.CommandCompiler()

    @property
    def flags(self) -> int:
        return int(getattr(self.compiler.compiler, "flags", 0))

    def _attempt(self, lines: list[str]) -> types.CodeType | None | Exception:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return self.compiler("\n".join(lines), self.filename, "single")
            except (SyntaxError, OverflowError, ValueError) as e:
                return e

    def _block(self, lines: list[str], code: types.CodeType, flags: int) -> _Block:
        defines: str | None = None
        node: ast.stmt | None = None
        imports: list[tuple[str, str]] = []
        try:
            tree = ast.parse("\n".join(lines), self.filename, mode="single")
        except (SyntaxError, ValueError):
            tree = None
        if isinstance(tree, ast.Interactive):
            if len(tree.body) == 1 and isinstance(tree.body[0], _DEFINITIONS):
                node = tree.body[0]
                defines = node.name
            for sub in ast.walk(tree):
                if isinstance(sub, ast.ImportFrom) and sub.module and not sub.level:
                    imports += [(sub.module, a.name) for a in sub.names if a.name != "*"]
        return _Block(
            tuple(lines),
            code,
            tuple(futureFeatures(flags)),
            defines,
            node,
            _codesIn(code),
            tuple(imports),
        )

    def feed(self, lines: Sequence[str]) -> tuple[list[_Block], list[str]]:
        """
        Replay C{lines}.

        @return: the complete blocks, and the lines of the block still open
            at the end.
        """
        blocks: list[_Block] = []
        queue = deque(lines)
        buffer: list[str] = []
        while queue:
            line = queue.popleft()
            flags = self.flags
            result = self._attempt(buffer + [line])
            if isinstance(result, types.CodeType):
                blocks.append(self._block(buffer + [line], result, flags))
                buffer = []
            elif result is None:
                buffer.append(line)
            elif not buffer:
                pass  # a line the interpreter refused: nothing ran
            else:
                # The line cannot continue the open block: an empty line
                # (never kept in history) closed that block before it.
                closed = self.close(buffer)
                if closed is not None:
                    blocks.append(closed)
                    queue.appendleft(line)
                else:
                    # Not a block after all (a line that was recalled but
                    # never entered, say): start again one line further.
                    queue.extendleft(reversed(buffer[1:] + [line]))
                buffer = []
        return blocks, buffer

    def close(self, buffer: list[str]) -> _Block | None:
        """
        The block C{buffer} is, closed by an empty line, or C{None} if that
        does not compile.
        """
        if not buffer:
            return None
        flags = self.flags
        result = self._attempt(buffer + [""])
        if isinstance(result, types.CodeType):
            return self._block(buffer + [""], result, flags)
        return None


def _definitionTimeNames(node: ast.stmt) -> list[str]:
    """
    The names a C{def} or C{class} statement looks up when it runs (not
    when the function it makes is called): decorators, defaults,
    annotations, bases, keywords, and the class body outside its methods.
    """
    names: list[str] = []

    def collect(tree: ast.AST | None) -> None:
        if tree is None:
            return
        for sub in ast.walk(tree):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
                if sub.id not in names:
                    names.append(sub.id)

    def visit(stmt: ast.stmt) -> None:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            arguments = stmt.args
            expressions: list[ast.expr | None] = [
                *stmt.decorator_list,
                *arguments.defaults,
                *arguments.kw_defaults,
            ]
            for expr in expressions:
                collect(expr)
            for arg in [
                *arguments.posonlyargs,
                *arguments.args,
                *arguments.kwonlyargs,
                arguments.vararg,
                arguments.kwarg,
            ]:
                if arg is not None:
                    collect(arg.annotation)
            collect(stmt.returns)
        elif isinstance(stmt, ast.ClassDef):
            for expr in [*stmt.decorator_list, *stmt.bases]:
                collect(expr)
            for keyword in stmt.keywords:
                collect(keyword.value)
            for inner in stmt.body:
                visit(inner)
        else:
            collect(stmt)

    visit(node)
    return names


def _splitPending(
    history: list[str], pending: list[str] | None
) -> tuple[list[str], list[str] | None]:
    """
    The history lines that ran, and the pending block's lines (C{None}:
    unknown).  The pending block's non-empty lines end the history.
    """
    if pending is None:
        return history, None
    typed = [line for line in pending if line]
    if typed and history[-len(typed) :] == typed:
        return history[: -len(typed)], pending
    return history, pending
