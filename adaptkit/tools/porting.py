"""Find (and fix) the mmcv 1.x / mmseg 0.x imports that foreign backbone code still uses.

A backbone copied from a paper's repository usually imports ``mmcv.runner``,
``mmcv.cnn.utils.weight_init`` or ``mmseg.models.builder``: names that mmcv
2.x moved to mmengine or dropped. ``scan`` reads the code with :mod:`ast`
(no import, nothing runs) and lists each such import and attribute use with
its replacement; ``rewrite`` rewrites the import statements whose
replacement is one-to-one, keeping a backup of every file it touches.

The rules are data (:data:`PORT_RULES`): a dotted old path, the new path, a
note, whether the new path is a drop-in, and whether the old path names a
whole module. Names that still exist in mmcv 2.x (``mmcv.cnn.ConvModule``,
``build_norm_layer``, ``mmcv.cnn.bricks.transformer``...) are not listed.
"""

from __future__ import annotations

import ast
import io
import os
import shutil
import stat
import tokenize
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from adaptkit.core.files import os_error_message, read_bytes_bounded, user_path, user_path_errors, write_atomic
from adaptkit.errors import EmitError, PortError
from adaptkit.tools.port_rules import PORT_RULES, PortRule, lookup

__all__ = [
    "PortRule",
    "PortFinding",
    "RewrittenFile",
    "PortReport",
    "PORT_RULES",
    "lookup",
    "scan",
    "rewrite",
]

_MAX_LINE = 120
_SKIPPED_DIRS = {"__pycache__", "node_modules", "site-packages"}


@dataclass(frozen=True)
class PortFinding:
    """One use of an old path: where, what replaces it, and whether ``rewrite`` fixes it."""

    file: Path
    line: int
    col: int
    old: str
    new: str
    note: str
    auto_fixable: bool


@dataclass(frozen=True)
class RewrittenFile:
    file: Path
    backup: Path
    fixed: int


@dataclass(frozen=True)
class PortReport:
    """What a scan (or a rewrite) found under ``path``; ``rewritten`` is empty for a scan."""

    path: Path
    files: tuple[Path, ...]
    findings: tuple[PortFinding, ...]
    rewritten: tuple[RewrittenFile, ...]

    @property
    def fixable(self) -> int:
        return sum(f.auto_fixable for f in self.findings)


# ----------------------------------------------------------------------------- reading files


@dataclass(frozen=True)
class _Source:
    file: Path
    text: str
    encoding: str
    tree: ast.Module


#: the largest file read: backbone sources are tens of kilobytes; beyond this a file is data, not code
MAX_FILE_BYTES = 4 << 20


def _read(file: Path) -> _Source:
    """Read and parse one file; raises PortError with one line when it is not Python.

    The read is bounded and never blocks (a FIFO named x.py, /dev/zero behind
    a symlink); a file nested too deeply for the parser is refused, not a crash.
    """
    data = read_bytes_bounded(file, MAX_FILE_BYTES, "file", PortError, follow=True)
    if data is None:
        raise PortError(
            f"{file} is larger than {MAX_FILE_BYTES >> 20} MB; that is not backbone source, port it by hand"
        )
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        text = data.decode(encoding)
        tree = ast.parse(text, filename=str(file))
    except SyntaxError as exc:
        raise PortError(
            f"{file} does not parse as Python (line {exc.lineno}: {exc.msg}); fix it or port it by hand"
        ) from None
    except (UnicodeDecodeError, LookupError) as exc:
        raise PortError(f"{file} is not readable Python source ({exc}); give a .py file") from None
    except ValueError as exc:  # null bytes
        raise PortError(f"{file} is not Python source ({exc}); give a .py file") from None
    except (MemoryError, RecursionError):
        raise PortError(f"{file} is nested too deeply for Python's parser; port it by hand") from None
    return _Source(file, text, encoding, tree)


def _python_files(root: Path) -> list[Path]:
    """The regular ``.py`` files under ``root``: symlinks that lead out of it, FIFOs and devices are skipped."""
    inside = root.resolve()
    files: list[Path] = []
    for folder, dirs, names in os.walk(root):  # symlinked folders are not entered
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIPPED_DIRS)
        for name in sorted(names):
            file = Path(folder) / name
            if name.endswith(".py") and _regular_inside(file, inside):
                files.append(file)
    return files


def _regular_inside(file: Path, root: Path) -> bool:
    try:
        if not stat.S_ISREG(os.stat(file).st_mode):  # a FIFO would block, a device never ends
            return False
        return not file.is_symlink() or file.resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # dangling or looping links
        return False


def _targets(path: str | os.PathLike[str]) -> tuple[Path, list[Path]]:
    root = user_path(path, "port target", PortError)
    with user_path_errors(root, "read", PortError):
        exists, is_dir = root.exists(), root.is_dir()
        regular = exists and stat.S_ISREG(os.stat(root).st_mode)
    if not exists:
        raise PortError(f"{root} does not exist: give a .py file or a folder of them")
    if is_dir:
        return root, _python_files(root)
    if not regular:
        raise PortError(f"{root} is not a regular file (a FIFO or a device): give a .py file or a folder of them")
    if root.suffix != ".py":
        raise PortError(f"{root} is not Python source (.py): give a .py file or a folder of them")
    return root, [root]


# ----------------------------------------------------------------------------- finding uses


@dataclass(frozen=True)
class _ImportFix:
    """An import statement to rewrite: its node and the findings it fixes."""

    node: ast.Import | ast.ImportFrom
    fixed: tuple[PortFinding, ...]


def _dotted(node: ast.expr) -> list[str] | None:
    """``a.b.c`` -> ['a', 'b', 'c']; None when the chain does not start at a name."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


def _line_bytes(lines: list[str], lineno: int) -> bytes:
    return lines[lineno - 1].encode("utf-8")


def _owns_lines(node: ast.stmt, lines: list[str]) -> bool:
    """True when the statement alone fills its lines (a trailing comment allowed)."""
    first = _line_bytes(lines, node.lineno)
    last = _line_bytes(lines, node.end_lineno or node.lineno)
    before = first[: node.col_offset]
    after = last[node.end_col_offset :].strip()
    return not before.strip() and (not after or after.startswith(b"#"))


class _Scanner(ast.NodeVisitor):
    """Collects import bindings and findings for one parsed file."""

    def __init__(self, source: _Source) -> None:
        self.source = source
        # the line breaks ast counts (str.splitlines also splits on \f, \x1c, \u2028...)
        self.lines = io.StringIO(source.text, newline="").readlines()
        self.bindings: dict[str, str] = {}
        self.findings: list[PortFinding] = []
        self.fixes: list[_ImportFix] = []

    def run(self) -> None:
        for node in ast.walk(self.source.tree):
            if isinstance(node, ast.Import):
                self._import(node)
            elif isinstance(node, ast.ImportFrom):
                self._import_from(node)
        self.visit(self.source.tree)

    def _finding(self, node: ast.AST, old: str, new: str, note: str, fixable: bool) -> PortFinding:
        finding = PortFinding(
            self.source.file, getattr(node, "lineno", 1), getattr(node, "col_offset", 0), old, new, note, fixable
        )
        self.findings.append(finding)
        return finding

    def _import(self, node: ast.Import) -> None:
        owns = _owns_lines(node, self.lines)
        fixed = []
        for alias in node.names:
            top = alias.name.split(".")[0]
            self.bindings[alias.asname or top] = alias.name if alias.asname else top
            match = lookup(alias.name)
            if match is None:
                continue
            rule, old, new = match
            # `import old.mod as m` becomes `import new.mod as m` when the whole module carried over
            fixable = owns and alias.asname is not None and rule.module and rule.fixable and old == alias.name
            finding = self._finding(alias, old, new, rule.note, fixable)
            if fixable:
                fixed.append(finding)
        if fixed:
            self.fixes.append(_ImportFix(node, tuple(fixed)))

    def _import_from(self, node: ast.ImportFrom) -> None:
        if node.level:
            self._relative_import(node)
            return
        if not node.module:
            return
        owns = _owns_lines(node, self.lines)
        fixed = []
        for alias in node.names:
            if alias.name == "*":
                match = lookup(node.module)
                if match is not None:
                    rule, old, new = match
                    self._finding(alias, f"{node.module}.*", new, f"{rule.note}; name the imports one by one", False)
                continue
            path = f"{node.module}.{alias.name}"
            self.bindings[alias.asname or alias.name] = path
            match = lookup(path)
            if match is None:
                continue
            rule, old, new = match
            fixable = owns and rule.fixable and "." in new
            finding = self._finding(alias, old, new, rule.note, fixable)
            if fixable:
                fixed.append(finding)
        if fixed:
            self.fixes.append(_ImportFix(node, tuple(fixed)))

    def _relative_import(self, node: ast.ImportFrom) -> None:
        """``from ..builder import BACKBONES``: resolvable only inside its original package.

        adaptkit imports ``file.py:Name`` as a top-level module, where a
        relative import fails, so each is reported for a hand fix; when the
        file still sits in its package's folders (``.../mmseg/models/...``)
        the absolute path, and its replacement when it has one, are named.
        """
        base = _package_of(self.source.file, node.level)
        dots = "." * node.level + (node.module or "")
        for alias in node.names:
            old = f"{dots}.{alias.name}" if node.module else f"{dots}{alias.name}"
            absolute = ".".join(p for p in (base, node.module, alias.name) if p) if base is not None else None
            if absolute is not None:
                self.bindings[alias.asname or alias.name] = absolute
            match = lookup(absolute) if absolute is not None else None
            if match is not None:
                rule, _, new = match
                note = f"a relative import ({absolute}); {rule.note}"
            else:
                new = absolute or ""
                note = "a relative import: write it absolutely (file.py:Name is imported outside any package)"
            self._finding(alias, old, new, note, False)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        parts = _dotted(node)
        if parts is None or parts[0] not in self.bindings:
            self.generic_visit(node)
            return
        bound = self.bindings[parts[0]]
        match = lookup(".".join([bound, *parts[1:]]))
        # report only what reaches past the import itself (the import line is reported already)
        if match is not None and match[1].count(".") > bound.count("."):
            rule, old, new = match
            self._finding(node, old, new, rule.note, False)


#: the packages whose folder layout tells what a relative import in a copied file meant
_KNOWN_PACKAGES = ("mmseg", "mmdet", "mmpose", "mmcls", "mmpretrain", "mmcv", "mmengine")


def _package_of(file: Path, level: int) -> str | None:
    """The package a relative import of ``level`` dots resolves to, from the file's folders; None when unknown."""
    parts = file.resolve().parent.parts
    start = max((i for i, part in enumerate(parts) if part in _KNOWN_PACKAGES), default=None)
    if start is None:
        return None
    package = list(parts[start:])
    if level - 1 >= len(package):
        return None
    return ".".join(package[: len(package) - (level - 1)])


def _scan_file(source: _Source) -> _Scanner:
    scanner = _Scanner(source)
    scanner.run()
    return scanner


def _unparsable(file: Path, error: PortError) -> PortFinding:
    return PortFinding(file, 1, 0, "<syntax error>", "", f"cannot parse: {error}", False)


def _scan_all(path: str | os.PathLike[str]) -> tuple[Path, list[Path], list[_Scanner], list[PortFinding]]:
    root, files = _targets(path)
    scanners: list[_Scanner] = []
    broken: list[PortFinding] = []
    for file in files:
        try:
            source = _read(file)
        except PortError as exc:
            if root.is_file():
                raise
            broken.append(_unparsable(file, exc))
            continue
        scanners.append(_scan_file(source))
    return root, files, scanners, broken


def _sorted(findings: Iterable[PortFinding]) -> tuple[PortFinding, ...]:
    return tuple(sorted(findings, key=lambda f: (str(f.file), f.line, f.col)))


def scan(path: str | os.PathLike[str]) -> PortReport:
    """List the old mmcv/mmseg imports and uses in a .py file or a folder (recursively).

    Raises PortError for a missing path or a single file that is not Python;
    in a folder, files that do not parse are reported as findings.
    """
    root, files, scanners, broken = _scan_all(path)
    findings = [f for scanner in scanners for f in scanner.findings] + broken
    return PortReport(root, tuple(files), _sorted(findings), ())


# ----------------------------------------------------------------------------- rewriting


def _import_lines(indent: str, node: ast.Import | ast.ImportFrom, fixed: dict[int, str]) -> list[str]:
    """The statements that replace ``node``: kept names first, then one import per new module.

    ``fixed`` maps the index of each alias to rewrite to its new dotted path.
    """
    groups: dict[str, list[str]] = {}
    plain: list[str] = []
    moved: list[str] = []
    for index, alias in enumerate(node.names):
        item = alias.name if alias.asname is None else f"{alias.name} as {alias.asname}"
        if index not in fixed:
            if isinstance(node, ast.ImportFrom):
                groups.setdefault(node.module or "", []).append(item)
            else:
                plain.append(item)
            continue
        new = fixed[index]
        if isinstance(node, ast.Import):
            moved.append(f"import {new} as {alias.asname}")
            continue
        module, name = new.rsplit(".", 1)
        local = alias.asname or alias.name
        groups.setdefault(module, []).append(name if name == local else f"{name} as {local}")
    lines = [f"import {', '.join(plain)}"] if plain else []
    for module, items in groups.items():
        line = f"from {module} import {', '.join(items)}"
        if len(indent) + len(line) > _MAX_LINE:
            inner = "".join(f"\n{indent}    {item}," for item in items)
            line = f"from {module} import ({inner}\n{indent})"
        lines.append(line)
    return [*lines, *moved]


def _rewritten_text(scanner: _Scanner) -> str:
    lines = list(scanner.lines)
    fixes = sorted(scanner.fixes, key=lambda fix: fix.node.lineno, reverse=True)
    for fix in fixes:
        node = fix.node
        first, last = node.lineno, node.end_lineno or node.lineno
        new_paths = {(f.line, f.col): f.new for f in fix.fixed}
        fixed = {
            index: new_paths[(alias.lineno, alias.col_offset)]
            for index, alias in enumerate(node.names)
            if (alias.lineno, alias.col_offset) in new_paths
        }
        last_line = lines[last - 1]
        body = last_line.rstrip("\r\n")
        newline = last_line[len(body) :] or "\n"
        indent = lines[first - 1][: len(lines[first - 1]) - len(lines[first - 1].lstrip())]
        comment = _line_bytes(lines, last)[node.end_col_offset :].strip().decode("utf-8")
        statements = _import_lines(indent, node, fixed)
        new_lines = [f"{indent}{statement}" for statement in statements]
        if comment:
            new_lines[0] += f"  {comment}"
        block = "".join(f"{line}{newline}" for line in new_lines)
        if not last_line.endswith(("\n", "\r")):
            block = block[: -len(newline)]
        lines[first - 1 : last] = [block]
    return "".join(lines)


def _backup_path(file: Path) -> Iterator[Path]:
    yield file.with_name(file.name + ".orig")
    number = 1
    while True:
        yield file.with_name(f"{file.name}.orig.{number}")
        number += 1


def _write_backup(file: Path, data: bytes) -> Path:
    """Copy the original next to the file; never replaces an existing backup."""
    for candidate in _backup_path(file):
        try:
            with open(candidate, "xb") as handle:
                handle.write(data)
        except FileExistsError:
            continue
        shutil.copymode(file, candidate)
        return candidate
    raise AssertionError("unreachable")  # pragma: no cover


def _write_atomic(file: Path, data: bytes) -> None:
    """Replace ``file`` in one step, keeping its mode (the one write path: ``adaptkit.core.files``)."""
    write_atomic(file, data, force=True)


def rewrite(path: str | os.PathLike[str]) -> PortReport:
    """Rewrite the imports that have a one-to-one replacement; keep ``FILE.py.orig`` backups.

    Everything is read, rewritten in memory and re-parsed before the first
    write; each file is then replaced atomically. Findings that need a hand
    stay in the report (``auto_fixable`` False).
    """
    root, files, scanners, broken = _scan_all(path)
    planned: list[tuple[_Scanner, bytes, int]] = []
    for scanner in scanners:
        if not scanner.fixes:
            continue
        text = _rewritten_text(scanner)
        try:
            ast.parse(text)
        except SyntaxError as exc:  # a rewrite must never break a file; leave it alone
            raise PortError(
                f"rewriting {scanner.source.file} would not parse (line {exc.lineno}); nothing was written"
            ) from None
        count = sum(len(fix.fixed) for fix in scanner.fixes)
        planned.append((scanner, text.encode(scanner.source.encoding), count))
    rewritten = []
    written: set[Path] = set()
    for scanner, data, count in planned:
        file = scanner.source.file
        real = file.resolve()
        if real in written:  # one file reached twice through a symlink: rewrite it once
            continue
        written.add(real)
        if file.is_symlink():  # keep the link; rewrite (and back up) the file it points to
            file = real
        try:
            backup = _write_backup(file, file.read_bytes())
            _write_atomic(file, data)
        except EmitError as exc:
            raise PortError(str(exc)) from None
        except OSError as exc:
            raise PortError(f"cannot rewrite {file}: {os_error_message(exc)}") from None
        rewritten.append(RewrittenFile(file, backup, count))
    findings = [f for scanner in scanners for f in scanner.findings] + broken
    return PortReport(root, tuple(files), _sorted(findings), tuple(rewritten))
