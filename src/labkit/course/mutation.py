r"""Mutation testing of the exercises' hidden tests: change a solution a little, grade it, and
see whether a test notices.

For example, the mutants of a tiny answer cell::

    >>> from labkit.course import mutation
    >>> cell = "### BEGIN SOLUTION\nrows = query.order_by(Post.views.desc(), Post.id).limit(5)\n### END SOLUTION\n"
    >>> for mutant in mutation.mutate_cell(cell, "nb.ipynb", "top"):
    ...     print(mutant.describe())
    top:2 delete-statement: rows = query.order_by(Post.views.desc(), Post.id).limit(5) → pass
    top:2 drop-chained-call: .limit(...) → removed
    top:2 drop-term: Post.views.desc() → no order_by term
    top:2 drop-term: Post.id → no order_by term
    top:2 flip-direction: .desc() → .asc()
    top:2 change-number: 5 → 6
    top:2 change-number: 5 → 4
    top:2 change-number: 5 → 5000
    top:2 change-number: 5 → 0

The whole pass over an assignment (minutes: every mutant is graded by nbgrader)::

    report = mutation.run("00-warmup")          # generated / caught / equivalent / survived
    print(report)

or, from a terminal, ``python -m labkit grade mutants [ASSIGNMENT]``.

A *mutant* is the solution of one answer cell with one mechanical change (the operators
are in :data:`OPERATORS`): a statement deleted, a keyword argument dropped, a chained call
removed, an ORDER BY / GROUP BY term dropped (in SQL text and in SQLAlchemy), a sort
direction flipped, a number changed, two statements swapped or moved into or out of a
``with`` block, an ``except`` narrowed, a comparison changed. Only the lines inside
``### BEGIN SOLUTION`` / ``### END SOLUTION`` are mutated; setup cells never are.

Every mutant is graded by nbgrader's real ``autograde``, in the grading sandbox, with a
short cell timeout (30 s: a timeout counts as caught). A mutant is *caught* when a test
cell loses marks. One that survives is either a hole in the hidden tests, or listed in
``grading/equivalent-mutants.toml`` with the reason it behaves exactly as the solution
does (e.g. a redundant ``IF NOT EXISTS``). :func:`run` reports both, and CI requires 0
survivors that are not listed.

To stay fast, a first pass grades several mutants at once — one per answer cell, in one
submission — and counts a mutant as caught when the tests of its own task lose marks, and
as equivalent when its own task's tests pass and it is on the reviewed list. Every other
mutant is graded again alone, so "survived" and "caught by another task's test" are always
decided by a submission that holds that mutant only. The first pass relies on one task's
answer not changing another task's test result (true of these exercises: each task's
tests call only that task's answer, on rows and keys of their own); ``solo=True``
(``grade mutants --solo``) grades every mutant alone, which checks that claim.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "OPERATORS",
    "AssignmentReport",
    "Equivalent",
    "Mutant",
    "MutantResult",
    "equivalents",
    "equivalents_file",
    "grade_answers",
    "mutants_of",
    "mutate_cell",
    "run",
    "sample",
    "summary_table",
]

#: The mutation operators, in the order they are applied.
OPERATORS = (
    "delete-statement",
    "drop-keyword",
    "drop-chained-call",
    "drop-term",
    "flip-direction",
    "change-number",
    "swap-statements",
    "move-with",
    "narrow-except",
    "flip-comparison",
)

#: Calls whose positional arguments are terms that a slip can leave out.
TERM_METHODS = ("order_by", "group_by", "where", "filter", "options", "join", "values")
#: Narrower exceptions that a slip might catch instead (by the caught name's last part).
NARROWER = {
    "RedisError": ("ConnectionError", "TimeoutError"),
    "BaseException": ("Exception",),
    "Exception": ("RuntimeError",),
    "SQLAlchemyError": ("OperationalError",),
    "DBAPIError": ("OperationalError",),
    "OSError": ("ConnectionError",),
    "LookupError": ("KeyError",),
}
FLIPPED_COMPARISON = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
    ast.In: ast.NotIn, ast.NotIn: ast.In,
}  # fmt: skip
_COMPARISON_TEXT = {
    ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
    ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in",
}  # fmt: skip
_SQL_WORDS = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|WITH)\b", re.IGNORECASE)
_CLAUSE = re.compile(
    r"\b(?P<kind>ORDER|GROUP)\s+BY\s+(?P<terms>.+?)(?=\bLIMIT\b|\bOFFSET\b|\bHAVING\b|\bORDER\s+BY\b"
    r"|\bWINDOW\b|\bFOR\s+UPDATE\b|;|\)|$)",
    re.IGNORECASE | re.DOTALL,
)
_DIRECTION = re.compile(r"\b(ASC|DESC)\b", re.IGNORECASE)
_SQL_NUMBER = re.compile(r"(?<![\w.$])(\d+)(?![\w.])")
_REGION = re.compile(r"^\s*### BEGIN SOLUTION\s*$(.*?)^\s*### END SOLUTION\s*$", re.M | re.S)


# --------------------------------------------------------------------------- mutants


@dataclass(frozen=True)
class Mutant:
    """One answer cell's solution with one change."""

    notebook: str
    cell: str  # the answer cell's grade_id
    operator: str
    line: int  # line of the change, in the cell
    before: str
    after: str
    source: str  # the whole mutated cell

    @property
    def id(self) -> str:
        """Stable while the solution is unchanged: a hash of where it is and what it became."""
        text = f"{self.notebook}\0{self.cell}\0{self.source}"
        return hashlib.sha1(text.encode()).hexdigest()[:10]

    def describe(self) -> str:
        return (
            f"{self.cell}:{self.line} {self.operator}: {_short(self.before)} → {_short(self.after)}"
        )


def _short(text: str, limit: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Source:
    """A cell's text with AST positions turned into character offsets."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.lines = text.splitlines(keepends=True)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))
        self.regions = self._regions()

    def offset(self, lineno: int, col: int) -> int:
        line = self.lines[lineno - 1] if lineno - 1 < len(self.lines) else ""
        return self.starts[lineno - 1] + len(line.encode()[:col].decode(errors="ignore"))

    def span(self, node: ast.AST) -> tuple[int, int]:
        return (
            self.offset(node.lineno, node.col_offset),
            self.offset(node.end_lineno, node.end_col_offset),
        )

    def segment(self, node: ast.AST) -> str:
        start, end = self.span(node)
        return self.text[start:end]

    def _regions(self) -> list[tuple[int, int]]:
        """Line ranges (1-based, inclusive) strictly inside the solution markers."""
        found = []
        begin = None
        for number, line in enumerate(self.lines, start=1):
            if line.strip() == "### BEGIN SOLUTION":
                begin = number
            elif line.strip() == "### END SOLUTION" and begin is not None:
                found.append((begin + 1, number - 1))
                begin = None
        return found

    def in_solution(self, node: ast.AST) -> bool:
        return any(a <= node.lineno and node.end_lineno <= b for a, b in self.regions)

    def replace(self, start: int, end: int, new: str) -> str:
        return self.text[:start] + new + self.text[end:]


def _indent_following(text: str, by: int) -> str:
    """Shift every line but the first by ``by`` columns (negative: dedent)."""
    lines = text.split("\n")
    out = [lines[0]]
    for line in lines[1:]:
        if by >= 0:
            out.append(" " * by + line if line.strip() else line)
        else:
            cut = min(-by, len(line) - len(line.lstrip(" ")))
            out.append(line[cut:])
    return "\n".join(out)


def _call_text(src: _Source, call: ast.Call, args: list[ast.AST], keywords: list[ast.keyword]):
    parts = [src.segment(a) for a in args]
    for keyword in keywords:
        value = src.segment(keyword.value)
        parts.append(f"{keyword.arg}={value}" if keyword.arg else f"**{value}")
    return f"{src.segment(call.func)}({', '.join(parts)})"


def _string_variants(value: str) -> Iterator[tuple[str, str, str, str]]:
    """(operator, before, after, new value) for the SQL in a string constant."""
    if not _SQL_WORDS.search(value):
        return
    for clause in _CLAUSE.finditer(value):
        terms_text = clause["terms"]
        terms = _split_terms(terms_text)
        if len(terms) >= 2:
            for index in range(len(terms)):
                kept = ", ".join(t.strip() for i, t in enumerate(terms) if i != index)
                trailing = terms_text[len(terms_text.rstrip()) :]
                new = (
                    value[: clause.start("terms")] + kept + trailing + value[clause.end("terms") :]
                )
                yield "drop-term", clause.group(0).strip(), f"{clause['kind']} BY {kept}", new
    for match in _DIRECTION.finditer(value):
        flipped = "ASC" if match.group(1).upper() == "DESC" else "DESC"
        new = value[: match.start()] + flipped + value[match.end() :]
        yield "flip-direction", match.group(1), flipped, new
    for match in _SQL_NUMBER.finditer(value):
        number = int(match.group(1))
        for changed in _numbers(number):
            new = value[: match.start()] + str(changed) + value[match.end() :]
            yield "change-number", match.group(1), str(changed), new


def _split_terms(text: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    terms.append(current)
    return [t for t in terms if t.strip()]


def _numbers(value: int | float) -> list[int | float]:
    out = []
    for changed in (value + 1, value - 1, value * 1000, 0):
        if changed != value and changed not in out:
            out.append(changed)
    return out


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def mutate_cell(source: str, notebook: str = "", cell: str = "") -> list[Mutant]:
    """Every mutant of the solution regions of one answer cell (compilable, distinct)."""
    src = _Source(source)
    if not src.regions:
        return []
    tree = ast.parse(source)
    found: list[Mutant] = []
    seen = {source}

    def add(operator: str, node: ast.AST, start: int, end: int, new: str, before: str, after: str):
        text = src.replace(start, end, new)
        if text in seen:
            return
        try:
            compile(text, f"<{cell}>", "exec")
        except SyntaxError:
            return
        seen.add(text)
        found.append(Mutant(notebook, cell, operator, node.lineno, before, after, text))

    nodes = [n for n in ast.walk(tree) if hasattr(n, "lineno") and src.in_solution(n)]
    nodes.sort(key=lambda n: (n.lineno, n.col_offset))

    for node in nodes:
        # delete a statement (docstrings and `pass` are no change)
        if isinstance(node, ast.stmt) and not isinstance(node, ast.Pass):
            if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
                start, end = src.span(node)
                add("delete-statement", node, start, end, "pass", src.segment(node), "pass")

        if isinstance(node, ast.Call):
            start, end = src.span(node)
            # drop a keyword argument
            for keyword in node.keywords:
                kept = [k for k in node.keywords if k is not keyword]
                new = _call_text(src, node, node.args, kept)
                name = keyword.arg or "**"
                add("drop-keyword", node, start, end, new, f"{name}=...", f"no {name}")
            func = node.func
            if isinstance(func, ast.Attribute):
                # remove a chained call: x.method(...) -> x, when x is itself a call
                if isinstance(func.value, ast.Call):
                    kept = src.segment(func.value)
                    add(
                        "drop-chained-call", node, start, end, kept, f".{func.attr}(...)", "removed"
                    )
                # drop one term of ORDER BY / GROUP BY / WHERE / options ...
                if func.attr in TERM_METHODS and len(node.args) >= 2:
                    for arg in node.args:
                        kept_args = [a for a in node.args if a is not arg]
                        new = _call_text(src, node, kept_args, node.keywords)
                        add(
                            "drop-term",
                            node,
                            start,
                            end,
                            new,
                            src.segment(arg),
                            f"no {func.attr} term",
                        )
                # flip .desc() / .asc()
                if func.attr in ("desc", "asc") and not node.args:
                    other = "asc" if func.attr == "desc" else "desc"
                    new = f"{src.segment(func.value)}.{other}()"
                    add("flip-direction", node, start, end, new, f".{func.attr}()", f".{other}()")
            elif isinstance(func, ast.Name) and func.id in ("desc", "asc") and len(node.args) == 1:
                other = "asc" if func.id == "desc" else "desc"
                new = f"{other}({src.segment(node.args[0])})"
                add("flip-direction", node, start, end, new, f"{func.id}(...)", f"{other}(...)")

        if isinstance(node, ast.Constant):
            start, end = src.span(node)
            value = node.value
            if isinstance(value, bool) or value is None:
                pass
            elif isinstance(value, int | float):
                for changed in _numbers(value):
                    add(
                        "change-number", node, start, end, repr(changed), repr(value), repr(changed)
                    )
            elif isinstance(value, str) and not _is_docstring(node, tree):
                for operator, before, after, new in _string_variants(value):
                    add(operator, node, start, end, repr(new), before, after)

        if isinstance(node, ast.Compare):
            start, end = src.span(node)
            for index, op in enumerate(node.ops):
                flipped = FLIPPED_COMPARISON.get(type(op))
                if flipped is None:
                    continue
                parts = [src.segment(node.left)]
                for i, (o, comparator) in enumerate(zip(node.ops, node.comparators, strict=True)):
                    text = _COMPARISON_TEXT[flipped if i == index else type(o)]
                    parts += [text, src.segment(comparator)]
                old_text = _COMPARISON_TEXT[type(op)]
                add("flip-comparison", node, start, end, " ".join(parts), old_text,
                    _COMPARISON_TEXT[flipped])  # fmt: skip

        if isinstance(node, ast.ExceptHandler) and node.type is not None:
            start, end = src.span(node.type)
            caught = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
            for item in caught:
                name = _dotted(item)
                item_text = src.segment(item)
                for narrower in NARROWER.get(name or "", ()):
                    new_item = item_text[: len(item_text) - len(name)] + narrower
                    texts = [new_item if c is item else src.segment(c) for c in caught]
                    new = texts[0] if len(texts) == 1 else f"({', '.join(texts)})"
                    add("narrow-except", node, start, end, new, item_text, new_item)
                if len(caught) >= 2:
                    texts = [src.segment(c) for c in caught if c is not item]
                    new = texts[0] if len(texts) == 1 else f"({', '.join(texts)})"
                    add("narrow-except", node, start, end, new, src.segment(node.type), new)

    # statements: swap neighbours, move into or out of a `with` block
    for body in _bodies(tree):
        for first, second in zip(body, body[1:], strict=False):
            if not (src.in_solution(first) and src.in_solution(second)):
                continue
            a_start, a_end = src.span(first)
            b_start, b_end = src.span(second)
            a_text, b_text, between = (
                src.segment(first),
                src.segment(second),
                src.text[a_end:b_start],
            )
            if a_text != b_text and not _is_docstring_stmt(first):
                add("swap-statements", first, a_start, b_end, b_text + between + a_text,
                    f"{_short(a_text, 30)} ; {_short(b_text, 30)}", "swapped")  # fmt: skip
            if isinstance(first, ast.With | ast.AsyncWith):
                # the statement after the block moves to the end of the block
                indent = first.body[-1].col_offset
                moved = _indent_following(b_text, indent - second.col_offset)
                with_text = src.text[a_start:a_end]
                new = with_text + "\n" + " " * indent + moved
                add(
                    "move-with",
                    second,
                    a_start,
                    b_end,
                    new,
                    _short(b_text, 40),
                    "into the with block",
                )
        for stmt in body:
            if not isinstance(stmt, ast.With | ast.AsyncWith) or not src.in_solution(stmt):
                continue
            last = stmt.body[-1]
            if len(stmt.body) < 2 and not src.in_solution(last):
                continue
            w_start, w_end = src.span(stmt)
            l_start, l_end = src.span(last)
            head = src.text[w_start:l_start].rstrip(" ")
            if len(stmt.body) == 1:
                head += " " * last.col_offset + "pass"
            else:
                head = head.rstrip("\n ")
            moved = _indent_following(src.segment(last), stmt.col_offset - last.col_offset)
            new = head + "\n" + " " * stmt.col_offset + moved
            add("move-with", last, w_start, l_end, new, _short(src.segment(last), 40),
                "out of the with block")  # fmt: skip
    return found


def _is_docstring(node: ast.Constant, tree: ast.AST) -> bool:
    for parent in ast.walk(tree):
        body = getattr(parent, "body", None)
        if isinstance(body, list) and body and _is_docstring_stmt(body[0]):
            if body[0].value is node:
                return True
    return False


def _is_docstring_stmt(stmt: ast.stmt) -> bool:
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Constant)
        and isinstance(stmt.value.value, str)
    )


def _bodies(tree: ast.AST) -> Iterator[list[ast.stmt]]:
    for node in ast.walk(tree):
        for name in ("body", "orelse", "finalbody"):
            body = getattr(node, name, None)
            if isinstance(body, list) and body and isinstance(body[0], ast.stmt):
                yield body
        for handler in getattr(node, "handlers", []) or []:
            yield handler.body


def mutants_of(assignment: str, root: Path | None = None) -> list[Mutant]:
    """Every mutant of every answer cell of ``assignment`` (in ``root``, default the checkout's
    ``grading/``), in notebook and cell order."""
    from labkit.course import grading

    source = (root or grading.course_dir()) / "source" / assignment
    if not source.is_dir():
        known = ", ".join(grading.assignments(root)) or "none"
        raise grading.GradingError(f"no assignment {assignment!r} (known: {known})")
    found = []
    for path in sorted(source.glob("*.ipynb")):
        for grade_id, cell_source in grading.solution_cells(path).items():
            found += mutate_cell(cell_source, path.name, grade_id)
    return found


def sample(mutants: Sequence[Mutant], per_operator: int | None) -> list[Mutant]:
    """At most ``per_operator`` mutants per (notebook, cell, operator), chosen by their ids
    (the same choice on every machine); ``None`` keeps all. Every operator stays."""
    if per_operator is None:
        return list(mutants)
    groups: dict[tuple[str, str, str], list[Mutant]] = {}
    for mutant in mutants:
        groups.setdefault((mutant.notebook, mutant.cell, mutant.operator), []).append(mutant)
    keep = set()
    for members in groups.values():
        keep |= {m.id for m in sorted(members, key=lambda m: m.id)[:per_operator]}
    return [m for m in mutants if m.id in keep]


# --------------------------------------------------------------------------- equivalents


@dataclass(frozen=True)
class Equivalent:
    """A mutant that behaves as the solution does, with the reason (reviewed by a person)."""

    assignment: str
    id: str
    mutant: str
    reason: str


def equivalents_file(root: Path | None = None) -> Path:
    from labkit.course import grading

    return (root or grading.course_dir()) / "equivalent-mutants.toml"


def equivalents(assignment: str | None = None, root: Path | None = None) -> dict[str, Equivalent]:
    """The reviewed equivalent mutants (id → :class:`Equivalent`), of one assignment or all."""
    path = equivalents_file(root)
    if not path.is_file():
        return {}
    entries = tomllib.loads(path.read_text()).get("equivalent", [])
    found = {}
    for entry in entries:
        missing = {"assignment", "id", "mutant", "reason"} - set(entry)
        if missing or not str(entry.get("reason", "")).strip():
            raise ValueError(f"{path}: an entry lacks {sorted(missing) or ['a reason']}: {entry}")
        if assignment is None or entry["assignment"] == assignment:
            found[entry["id"]] = Equivalent(
                entry["assignment"], entry["id"], entry["mutant"], entry["reason"]
            )
    return found


# --------------------------------------------------------------------------- grading


@dataclass
class MutantResult:
    """What grading did to one mutant: ``caught`` (tests that lost marks), ``survived`` or
    ``equivalent`` (listed, with its reason)."""

    mutant: Mutant
    status: str
    lost: list[str] = field(default_factory=list)
    reason: str = ""


@dataclass(repr=False)
class AssignmentReport:
    """The mutation pass of one assignment."""

    assignment: str
    results: list[MutantResult]
    sampled_from: int
    seconds: float
    submissions: int
    stale_equivalents: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def generated(self) -> int:
        return len(self.results)

    @property
    def survived(self) -> list[MutantResult]:
        return [r for r in self.results if r.status == "survived"]

    def row(self) -> dict:
        return {
            "assignment": self.assignment,
            "generated": self.generated,
            "caught": self.count("caught"),
            "equivalent": self.count("equivalent"),
            "survived": self.count("survived"),
            "seconds": round(self.seconds),
        }

    def per_operator(self) -> dict[str, dict[str, int]]:
        table: dict[str, dict[str, int]] = {}
        for result in self.results:
            counts = table.setdefault(result.mutant.operator, {"caught": 0, "equivalent": 0,
                                                               "survived": 0})  # fmt: skip
            counts[result.status] += 1
        return table

    def __str__(self) -> str:
        row = self.row()
        lines = [
            f"{self.assignment}: {row['generated']} mutants (of {self.sampled_from} generated"
            f"{', sampled per operator' if self.sampled_from != row['generated'] else ''}), "
            f"{row['caught']} caught, {row['equivalent']} equivalent, {row['survived']} survived "
            f"— {self.submissions} graded submissions in {self.seconds:.0f} s"
        ]
        for operator, counts in sorted(self.per_operator().items()):
            lines.append(
                f"  {operator:<18} caught {counts['caught']:>3}  equivalent "
                f"{counts['equivalent']:>2}  survived {counts['survived']:>2}"
            )
        for result in self.survived:
            lines.append(
                f"  SURVIVED {result.mutant.id} {result.mutant.notebook} {result.mutant.describe()}"
            )
        for stale in self.stale_equivalents:
            lines.append(f"  (stale entry in the equivalent list: {stale})")
        return "\n".join(lines)

    __repr__ = __str__


def _test_order(path: Path) -> tuple[list[str], dict[str, list[str]]]:
    """The graded test cells of a notebook in order, and for each answer cell the test
    cells of its task (see :func:`labkit.course.cells.task_tests`)."""
    from labkit.course import cells

    return list(cells.tests(path)), cells.task_tests(path)


def _grade(
    course_root: Path,
    assignment: str,
    students: dict[str, dict[str, dict[str, str]] | str],
) -> dict[str, dict[str, tuple[float, float]]]:
    """Grade one batch of students in a scratch course of its own; returns student →
    "notebook:test" → (score, max score). See :func:`grade_answers`."""
    from labkit.course import grading

    with grading.scratch_course(course_root, released=assignment) as course:
        release = course.release_dir(assignment)
        source = course.source_dir(assignment)
        staging = course.root / "answers"
        for student, answers in students.items():
            if answers == "solution":
                notebooks = {p.name: p for p in sorted(source.glob("*.ipynb"))}
            elif answers == "release":
                notebooks = {p.name: p for p in sorted(release.glob("*.ipynb"))}
            else:
                notebooks = {
                    notebook: grading.apply_answers(
                        source / notebook, cells, staging / student / notebook
                    )
                    for notebook, cells in answers.items()
                }
            course.submit(assignment, student, notebooks)
        course.autograde(assignment)
        scores = course.scores(assignment)
    return {
        student: {cell: (score.cells[cell], score.max_cells[cell]) for cell in score.cells}
        for student, score in scores.items()
    }


def grade_answers(
    assignment: str,
    students: dict[str, dict[str, dict[str, str]] | str],
    *,
    root: Path | None = None,
    workers: int | None = None,
    cell_timeout: int | None = None,
) -> dict[str, dict[str, tuple[float, float]]]:
    """Grade many simulated students through nbgrader's ``autograde``, in parallel scratch
    courses (``workers``, default: the CPU count, at most 4).

    ``students`` maps a student id to ``"solution"`` (the source notebooks), ``"release"``
    (the untouched student version) or ``{notebook: {grade_id: source}}`` — the solution
    notebooks with those answer cells replaced; notebooks not named are not submitted (their
    tests score 0). Returns student → ``"<notebook stem>:<test grade_id>"`` → (score, max)."""
    from labkit.course import grading
    from labkit.course.nbgrader_ext import CELL_TIMEOUT_ENV

    course_root = root or grading.course_dir()
    names = sorted(students)
    batches = _batches(names, workers or min(4, os.cpu_count() or 1))
    grades: dict[str, dict[str, tuple[float, float]]] = {}
    saved = os.environ.get(CELL_TIMEOUT_ENV)
    if cell_timeout is not None:
        os.environ[CELL_TIMEOUT_ENV] = str(cell_timeout)  # nbgrader's processes inherit it
    try:
        with ThreadPoolExecutor(max_workers=len(batches) or 1) as pool:
            futures = [
                pool.submit(_grade, course_root, assignment, {n: students[n] for n in batch})
                for batch in batches
            ]
            for future in futures:
                grades.update(future.result())
    finally:
        if saved is None:
            os.environ.pop(CELL_TIMEOUT_ENV, None)
        else:
            os.environ[CELL_TIMEOUT_ENV] = saved
    return grades


def _as_answers(mutants: dict[str, Mutant]) -> dict[str, dict[str, str]]:
    answers: dict[str, dict[str, str]] = {}
    for mutant in mutants.values():
        answers.setdefault(mutant.notebook, {})[mutant.cell] = mutant.source
    return answers


def _batches(items: list, count: int) -> list[list]:
    count = max(1, min(count, len(items)))
    return [items[i::count] for i in range(count)]


def run(
    assignment: str,
    *,
    root: Path | None = None,
    workers: int | None = None,
    cell_timeout: int = 30,
    per_operator: int | None = None,
    solo: bool = False,
    echo: Callable[[str], None] | None = print,
) -> AssignmentReport:
    """Generate the mutants of ``assignment`` and grade them all (see the module's doc).

    ``workers`` scratch courses grade in parallel (default: the CPU count, at most 4);
    ``per_operator`` samples at most that many mutants per cell and operator."""
    from labkit.course import grading

    say = echo or (lambda line: None)
    course_root = root or grading.course_dir()
    started = time.perf_counter()
    everything = mutants_of(assignment, course_root)
    mutants = sample(everything, per_operator)
    listed = equivalents(assignment, course_root)
    workers = workers or min(4, os.cpu_count() or 1)
    source = course_root / "source" / assignment
    orders = {p.name: _test_order(p) for p in sorted(source.glob("*.ipynb"))}
    say(f"{assignment}: {len(mutants)} mutants of {len(everything)} generated; grading with "
        f"{workers} parallel scratch courses, cell timeout {cell_timeout} s")  # fmt: skip

    # Pass 1: one mutant per answer cell in each submission.
    queues: dict[tuple[str, str], list[Mutant]] = {}
    for mutant in mutants:
        queues.setdefault((mutant.notebook, mutant.cell), []).append(mutant)
    rounds: list[dict[str, Mutant]] = []
    if solo:  # no first pass: every mutant alone
        queues = {}
    while any(queues.values()):
        group: dict[str, Mutant] = {}
        for key, queue in queues.items():
            if queue:
                group[f"{key[0]}:{key[1]}"] = queue.pop(0)
        rounds.append(group)
    students = {f"b{i:04d}": group for i, group in enumerate(rounds)}
    submitted: dict[str, dict[str, dict[str, str]] | str] = {
        name: _as_answers(group) for name, group in students.items()
    }
    submitted["solution"] = "solution"
    grades = grade_answers(
        assignment, submitted, root=course_root, workers=workers, cell_timeout=cell_timeout
    )
    submissions = len(students)
    baseline = grades["solution"]
    failing = [cell for cell, (score, top) in baseline.items() if score < top]
    if failing:
        raise grading.GradingError(
            f"{assignment}: the solutions themselves lose marks under the mutation settings "
            f"(cell timeout {cell_timeout} s) on {failing}: fix that before mutation testing"
        )

    def lost(student: str, notebook: str) -> list[str]:
        return [
            cell.split(":", 1)[1]
            for cell, (score, top) in grades[student].items()
            if cell.split(":", 1)[0] == Path(notebook).stem and score < top
        ]

    results: dict[str, MutantResult] = {}
    again: list[Mutant] = list(mutants) if solo else []
    for student, group in students.items():
        for mutant in group.values():
            failed = lost(student, mutant.notebook)
            own = orders[mutant.notebook][1].get(mutant.cell, [])
            if set(failed) & set(own):
                results[mutant.id] = MutantResult(mutant, "caught", sorted(set(failed) & set(own)))
            elif mutant.id in listed:  # reviewed: its own task's tests cannot tell it apart
                results[mutant.id] = MutantResult(
                    mutant, "equivalent", reason=listed[mutant.id].reason
                )
            else:
                again.append(mutant)

    # Pass 2: alone, every mutant that its own task's tests did not catch.
    if again:
        say(f"{assignment}: grading {len(again)} mutants again, each alone")
        alone = {f"m{m.id}": {m.notebook: {m.cell: m.source}} for m in again}
        grades.update(
            grade_answers(
                assignment, alone, root=course_root, workers=workers, cell_timeout=cell_timeout
            )
        )
        submissions += len(alone)
        for mutant in again:
            failed = lost(f"m{mutant.id}", mutant.notebook)
            if failed:
                results[mutant.id] = MutantResult(mutant, "caught", failed)
            elif mutant.id in listed:
                results[mutant.id] = MutantResult(
                    mutant, "equivalent", reason=listed[mutant.id].reason
                )
            else:
                results[mutant.id] = MutantResult(mutant, "survived")
    generated_ids = {m.id for m in everything}
    stale = [f"{e.id} ({e.mutant})" for e in listed.values() if e.id not in generated_ids]
    stale += [
        f"{r.mutant.id} ({r.mutant.describe()}) is caught by {', '.join(r.lost)}"
        for r in results.values()
        if r.status == "caught" and r.mutant.id in listed
    ]
    report = AssignmentReport(
        assignment,
        [results[m.id] for m in mutants],
        len(everything),
        time.perf_counter() - started,
        submissions,
        stale,
    )
    say(str(report))
    return report


def summary_table(rows: Sequence[dict]) -> str:
    """The per-assignment table (rows of :meth:`AssignmentReport.row`): generated, caught,
    equivalent, survived, seconds."""
    columns = ("generated", "caught", "equivalent", "survived", "seconds")
    header = f"{'assignment':<18} " + " ".join(f"{c:>10}" for c in columns)
    lines = ["mutation testing of the hidden tests", header, "-" * len(header)]
    for row in rows:
        lines.append(f"{row['assignment']:<18} " + " ".join(f"{row[c]:>10}" for c in columns))
    return "\n".join(lines)
