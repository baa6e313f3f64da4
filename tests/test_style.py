"""House rules of the library that a reader would otherwise have to check by eye."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINE = 120
GENERATED = {'_modidx.py'}           # nbdev's index of symbols, written by nbdev_export


def library_files():
    return [p for p in sorted((ROOT / 'hybrid_dlm').glob('*.py')) if p.name not in GENERATED]


def code_lines(p):
    "(number, line) of a module's lines, less the `__all__` that nbdev wraps at 120 before prefixing it."
    lines, in_all = [], False
    for i, line in enumerate(p.read_text().splitlines()):
        in_all = line.startswith('__all__ = [') or (in_all and not lines[-1][1].rstrip().endswith(']'))
        lines.append((i + 1, line, in_all))
    return [(i, line) for i, line, generated in lines if not generated]


def test_line_length():
    "Every line of the library fits in 120 characters (fix it in the notebook the module names, then nbdev_export)."
    long = [f'{p.name}:{i} ({len(line)})' for p in library_files() for i, line in code_lines(p) if len(line) > MAX_LINE]
    assert not long, f'{len(long)} lines longer than {MAX_LINE}: ' + ', '.join(long)


def test_no_timings_in_docstrings():
    "Docstrings say what and why; measured speeds belong to the benchmarks chapter."
    timing = re.compile(r'\b\d+(\.\d+)?\s*(x|times)\s+(faster|slower)\b|\b\d+(\.\d+)?\s*(ms|us|µs)\b', re.I)
    found = []
    for p in library_files():
        for m in re.finditer(r'("""|")(.*?)\1', p.read_text(), re.S):
            if timing.search(m.group(2)): found.append(f'{p.name}: {m.group(2)[:60]!r}')
    assert not found, found
