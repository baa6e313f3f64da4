"""Write README.md from nbs/index.ipynb without Quarto (which `nbdev_readme` needs).

Markdown cells are copied, code cells become fenced blocks followed by their text outputs, cells marked
`#| hide` are left out and `#|` directives are dropped. `--check` exits 1 when README.md is stale."""
import json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADER = '<!-- Generated from nbs/index.ipynb by scripts/make_readme.py: edit the notebook, not this file. -->\n'

def _src(cell): return ''.join(cell['source'])

def _directives(src): return [l[2:].strip() for l in src.splitlines() if l.startswith('#|')]

def _outputs(cell):
    "Text outputs of a code cell (streams and plain-text results), images left out."
    out = []
    for o in cell.get('outputs', []):
        if o['output_type'] == 'stream': out.append(''.join(o['text']))
        elif 'data' in o and 'text/markdown' in o['data']: out.append(('MD', ''.join(o['data']['text/markdown'])))
        elif 'data' in o and 'text/plain' in o['data']: out.append(''.join(o['data']['text/plain']))
    return out

def render(nb_path=ROOT/'nbs'/'index.ipynb'):
    nb = json.loads(Path(nb_path).read_text())
    parts = [HEADER]
    for cell in nb['cells']:
        src = _src(cell)
        if any(d.split()[0] == 'hide' for d in _directives(src) if d): continue
        if cell['cell_type'] == 'markdown': parts.append(src.strip() + '\n'); continue
        if cell['cell_type'] != 'code': continue
        code = '\n'.join(l for l in src.splitlines() if not l.startswith('#|')).strip()
        if code: parts.append(f'```python\n{code}\n```\n')
        for o in _outputs(cell):
            if isinstance(o, tuple): parts.append(o[1].strip() + '\n')
            else: parts.append('    ' + o.rstrip('\n').replace('\n', '\n    ') + '\n')
    return '\n'.join(parts)

if __name__ == '__main__':
    text, readme = render(), ROOT/'README.md'
    if '--check' in sys.argv:
        if not readme.exists() or readme.read_text() != text:
            sys.exit('README.md is out of date with nbs/index.ipynb: run `python scripts/make_readme.py`')
        print('README.md is in sync with nbs/index.ipynb')
    else:
        readme.write_text(text); print(f'wrote {readme}')
