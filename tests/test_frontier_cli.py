"""End-to-end checks of a temperature sweep from the command line: `hdlm sample-eval --temperatures` writes the
frontier's table and plot beside the usual files, its JSON rows carry their temperature, and giving both
--temperature and --temperatures is refused in one line."""
import csv, json, os, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ['train', '--preset', 'smoke', '--corpus', 'markov', '--steps', '20', '--set', 'emb_dim=8']
KEYS = ['model', 'steps', 'temperature', 'gen_ppl', 'gen_ppl_stderr', 'entropy', 'entropy_stderr', 'seconds_per_sample']


def hdlm(tmp, *args, check=True):
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1', HDLM_CACHE_DIR=str(tmp / 'cache'),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', ''))
    r = subprocess.run([sys.executable, '-m', 'hybrid_dlm.cli', *map(str, args)], capture_output=True, text=True, env=env,
                       cwd=tmp, timeout=900)
    if check: assert r.returncode == 0, r.stdout + r.stderr
    return r


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    "A briefly trained SEDD and AR run on the Markov corpus (8 token ids); the AR run judges."
    tmp = tmp_path_factory.mktemp('runs')
    for kind in ('sedd', 'ar'): hdlm(tmp, *TRAIN, '--model', kind, '--out', tmp / kind)
    return tmp


def test_temperature_sweep_writes_the_frontier(runs, tmp_path):
    "One row per (model, steps, temperature), the AR model at its 64 steps; the frontier's files beside the usual ones."
    temps = [0.7, 0.9, 1.0]
    r = hdlm(runs, 'sample-eval', '--ckpt', runs / 'sedd', runs / 'ar', '--temperatures', *temps, '--steps', 2, 4,
             '-n', 4, '--out', tmp_path / 'q', '--json')
    rows = json.loads(r.stdout)
    assert [(x['model'], x['steps'], x['temperature']) for x in rows] == (
        [('data', None, None)] + [('sedd', s, T) for s in (2, 4) for T in temps] + [('ar', 64, T) for T in temps])
    assert all(list(x) == KEYS for x in rows)
    assert all(x['gen_ppl'] > 1 and 0 <= x['entropy'] <= 2.08 and x['entropy_stderr'] >= 0 for x in rows)  # <= log 8
    out = tmp_path / 'q'
    for name in ('sample_eval.csv', 'sample_eval.png', 'frontier.csv', 'frontier.png'):
        assert (out / name).stat().st_size > 0, name
    with open(out / 'frontier.csv') as f: front = list(csv.DictReader(f))
    assert [(x['model'], float(x['nfe']), float(x['temperature'])) for x in front[1:]] == (
        [('sedd', s, T) for s in (2, 4) for T in temps] + [('ar', 64, T) for T in temps])
    assert front[0]['model'] == 'data' and {'gen_ppl_stderr', 'entropy_stderr'} <= set(front[0])


def test_one_temperature_writes_no_frontier(runs, tmp_path):
    r = hdlm(runs, 'sample-eval', '--ckpt', runs / 'sedd', '--judge', 'markov', '--temperature', 0.8, '--steps', 2,
             '-n', 4, '--out', tmp_path / 'q')
    assert 'temperature' in r.stdout.splitlines()[0] and not (tmp_path / 'q' / 'frontier.csv').exists()
    assert (tmp_path / 'q' / 'sample_eval.csv').exists()


@pytest.mark.parametrize('args, msg', [(['--temperature', '1', '--temperatures', '0.8', '1'],
                                        'give --temperature or --temperatures, not both: --temperatures 0.8 1 alone'),
                                       (['--temperatures', '0.8', '-0.1'], 'must be a number >= 0, got -0.1'),
                                       (['--temperatures', '0.9', '0.9'], 'give each temperature once')])
def test_bad_temperatures_get_one_line(runs, tmp_path, args, msg):
    r = hdlm(runs, 'sample-eval', '--ckpt', runs / 'sedd', '--judge', 'markov', '--steps', 2, '-n', 4,
             '--out', tmp_path / 'q', *args, check=False)
    assert r.returncode == 2 and r.stderr.count('\n') == 1, r.stderr
    assert r.stderr.startswith('error: ') and msg in r.stderr, r.stderr
    assert not (tmp_path / 'q').exists()
