"""Property-based fuzzing of `hdlm eval`, `sample`, `train --steps 1` and `convert`: generated argument lists, config
files and checkpoint bytes. Every run ends with status 0, or status 2 and one `error:` line; never a traceback, and
never a file written outside `--out`. The CLI runs in this process, on one tiny checkpoint trained once."""
import contextlib, io, json, os, shutil, tempfile, warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from hybrid_dlm.cli import main
from test_train_cli import TRAIN

FUZZ = settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    "A smoke-sized SEDD run on the Markov corpus (2 steps), and an older hybrid_dlm's ckpt.pt of it."
    tmp = tmp_path_factory.mktemp('fuzz')
    os.environ['HDLM_CACHE_DIR'] = str(tmp / 'cache')
    status, _, err = hdlm(tmp, [*TRAIN, '--model', 'sedd', '--steps', '2', '--out', 'run'])
    assert status == 0, err
    from hybrid_dlm.checkpoint import load_checkpoint
    m = load_checkpoint(tmp / 'run')
    torch.save({'config': m.cfg.to_dict(), 'model': m.state_dict(), 'step': 2}, tmp / 'ckpt.pt')
    return tmp


def listing(d:Path) -> set:
    return {str(p.relative_to(d)) for p in d.rglob('*')}


def hdlm(cwd:Path, argv:list):
    "(status, stdout, stderr) of `hdlm argv` run in this process with `cwd` as the working directory."
    out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter('ignore')
            try: status = main(argv)
            except SystemExit as e: status = e.code
    finally: os.chdir(here)
    return status, out.getvalue(), err.getvalue()


def check(trained:Path, argv:list, prepare=None, out:str=None):
    "Run `argv` in a fresh directory (holding a copy of the run, changed by `prepare`); check status, stderr and files."
    with tempfile.TemporaryDirectory() as d:
        d = Path(d); shutil.copytree(trained / 'run', d / 'run'); shutil.copy(trained / 'ckpt.pt', d / 'ckpt.pt')
        if prepare: prepare(d)
        before = listing(d)
        status, _, err = hdlm(d, argv)
        assert 'Traceback' not in err, err
        errors = [l for l in err.splitlines() if l.startswith('error: ')]
        assert status == 0 or (status == 2 and len(errors) == 1 and err.strip().splitlines()[-1] == errors[0]), \
            (argv, status, err)
        new = {p for p in listing(d) - before if not (out and (p == out or p.startswith(out + os.sep)))}
        assert not new, (argv, new)
    return status


# values: mostly sensible, some bad, a few absurd
INT = st.one_of(st.integers(-2, 5).map(str), st.sampled_from(['0', '1.5', 'nan', 'inf', 'x', '', '-0', '1e3']))
FLOAT = st.one_of(st.floats(-1, 2, allow_nan=False, allow_subnormal=False).map(lambda v: f'{v:.3g}'),
                  st.sampled_from(['0', '1', 'nan', 'inf', '-inf', 'x', '']))
TEXT = st.one_of(st.sampled_from(['1 2', '1 2 ___ 3', '___', '1 99', 'a b', '']), st.text(max_size=6))
JUNK = st.sampled_from(['--a', '--b', '--bogus', '-x', '--', 'extra', '--set', '--json', '--help'])


def options(table:dict):
    "Lists of (option, value) drawn from `table` (option -> strategy of its value, or None for a flag), and junk."
    one = st.one_of(*[st.just([k]) if v is None else v.map(lambda x, k=k: [k, x]) for k, v in table.items()],
                    JUNK.map(lambda j: [j]))
    return st.lists(one, max_size=5).map(lambda xs: [a for x in xs for a in x])


CKPT = st.sampled_from(['run', 'run/checkpoint', 'run/checkpoint/model.safetensors', 'missing', 'ckpt.pt', '', '.'])
EVAL_OPTS = options({'--ckpt': CKPT, '--corpus': st.sampled_from(['markov', 'wikipedia', 'run', '']),
                     '--split': st.sampled_from(['test', 'train', 'dev']), '--seq-len': INT, '--time-samples': INT,
                     '--max-chunks': INT, '--batch-size': INT, '--seed': INT, '--mc-target': FLOAT, '--oracle': None,
                     '--device': st.sampled_from(['cpu', 'cuda:7', 'tpu', '']), '--json': None})
SAMPLE_OPTS = options({'--ckpt': CKPT, '-n': INT, '--steps': INT, '--temperature': FLOAT, '--top-p': FLOAT,
                       '--seq-len': INT, '--prefix': TEXT, '--infill': TEXT, '--span': INT, '--seed': INT,
                       '--sampler': st.sampled_from(['analytic', 'euler', 'ddpm', 'ddim', 'x']), '--cache': None})
SETS = st.sampled_from(['steps=2', 'steps=0', 'steps=ten', 'a=0.8', 'b=0.3', 'lr=-1', 'lr=True', 'emb_dim=4',
                        'size=huge', 'chain=gauss', 'chain=mask 0.9 mask', 'batch_size=3', 'depht=2', 'x', '=1',
                        'max_docs=None', 'ckpt_every=1', 'graph=uniform', 'seq_len=8', 'seq_len=0'])
TRAIN_OPTS = options({'--model': st.sampled_from(['ar', 'sedd', 'continuous', 'hybrid', 'gpt']), '--lr': FLOAT,
                      '--batch-size': INT, '--seed': INT, '--lambda-b': FLOAT, '--set': SETS, '--resume': None,
                      '--chain': st.sampled_from(['mask 0.35 gauss 0.75 mask', 'gauss', 'mask 0.8 gauss 0.3 mask', 'x']),
                      '--preset': st.sampled_from(['smoke', 'huge'])})


@FUZZ
@given(EVAL_OPTS)
def test_eval(trained, opts):
    check(trained, ['eval', '--ckpt', 'run', '--corpus', 'markov', '--max-chunks', '4', '--time-samples', '1', *opts])


@FUZZ
@given(SAMPLE_OPTS)
def test_sample(trained, opts):
    check(trained, ['sample', '--ckpt', 'run', '-n', '1', '--steps', '2', *opts])


@settings(FUZZ, max_examples=8)
@given(TRAIN_OPTS)
def test_train_one_step(trained, opts):
    check(trained, [*TRAIN, '--model', 'sedd', '--out', 'out', *opts, '--steps', '1', '--set', 'batch_size=2'], out='out')


@settings(FUZZ, max_examples=8)
@given(st.sampled_from(['ckpt.pt', 'run/checkpoint/model.safetensors', 'missing', 'run']),
       st.one_of(st.none(), st.integers(0, 4000), st.binary(max_size=64)), st.booleans())
def test_convert(trained, name, change, keep):
    "A ckpt.pt, a safetensors file or nothing, cut at a byte (`change` an int) or replaced by bytes, converted."
    def prepare(d):
        f = d / name
        if change is None or not f.is_file(): return
        f.write_bytes(f.read_bytes()[:change] if isinstance(change, int) else change)
    check(trained, ['convert', name, '--out', 'out'] if keep else ['convert', name, '--out', 'out/new'], prepare, 'out')


JSON = st.recursive(st.none() | st.booleans() | st.integers(-3, 70) | st.floats(allow_nan=True, allow_subnormal=False) | st.text(max_size=4),
                    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids, max_size=3),
                    max_leaves=5)


def _paths(d, prefix=()):
    yield prefix
    if isinstance(d, dict):
        for k, v in d.items(): yield from _paths(v, (*prefix, k))


@FUZZ
@given(st.data(), JSON, st.sampled_from(['eval', 'sample', 'resume']))
def test_config_json(trained, data, value, command):
    "config.json with one of its entries (at any depth) replaced by any JSON value, or the file by that value."
    meta = json.loads((trained / 'run' / 'checkpoint' / 'config.json').read_text())
    path = data.draw(st.sampled_from(sorted(_paths(meta))))
    def prepare(d):
        m = json.loads(json.dumps(meta))
        if not path: m = value
        else:
            at = m
            for k in path[:-1]: at = at[k]
            at[path[-1]] = value
        (d / 'run' / 'checkpoint' / 'config.json').write_text(json.dumps(m))
    argv = {'eval': ['eval', '--ckpt', 'run', '--corpus', 'markov', '--max-chunks', '4', '--time-samples', '1'],
            'sample': ['sample', '--ckpt', 'run', '-n', '1', '--steps', '2'],
            'resume': [*TRAIN, '--model', 'sedd', '--out', 'run', '--resume', '--steps', '3']}[command]
    check(trained, argv, prepare, 'run' if command == 'resume' else None)


@FUZZ
@given(st.sampled_from(['model.safetensors', 'ema.safetensors', 'state.pt']), st.integers(0, 10 ** 6),
       st.binary(min_size=0, max_size=16), st.booleans(), st.sampled_from(['eval', 'resume']))
def test_checkpoint_bytes(trained, name, at, patch, cut, command):
    "A checkpoint file cut at a byte, or with bytes overwritten there: whatever reads a changed file refuses it."
    changed = []
    def prepare(d):
        f = d / 'run' / 'checkpoint' / name; b = f.read_bytes(); at_ = at % (len(b) + 1)
        f.write_bytes(b[:at_] if cut else b[:at_] + patch + b[at_ + len(patch):])
        changed.append(f.read_bytes() != b)
    argv = {'eval': ['eval', '--ckpt', 'run', '--corpus', 'markov', '--max-chunks', '4', '--time-samples', '1'],
            'resume': [*TRAIN, '--model', 'sedd', '--out', 'run', '--resume', '--steps', '3']}[command]
    status = check(trained, argv, prepare, 'run' if command == 'resume' else None)
    if changed[0] and (command == 'resume' or name == 'ema.safetensors'): assert status == 2, (name, at, patch, cut)
