"""End-to-end checks of sampling from the command line: prompts and infilling keep the given tokens, the AR model
refuses to infill, sample-eval prints one JSON list of the documented rows, a temperature sweep writes the
frontier's table and plot beside the usual files, and giving both --temperature and --temperatures is refused in one
line."""
import csv, json, os, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ['train', '--preset', 'smoke', '--corpus', 'markov', '--steps', '20', '--set', 'emb_dim=8', '--lambda-b', '4']
KINDS = ['ar', 'sedd', 'continuous', 'hybrid']
JSON_KEYS = ['model', 'steps', 'temperature', 'gen_ppl', 'gen_ppl_stderr', 'entropy', 'entropy_stderr',
             'seconds_per_sample', 'changed', 'remasked']      # a row of sample-eval --json


def hdlm(tmp, *args, check=True):
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1', HDLM_CACHE_DIR=str(tmp / 'cache'),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', ''))
    r = subprocess.run([sys.executable, '-m', 'hybrid_dlm.cli', *map(str, args)], capture_output=True, text=True, env=env,
                       cwd=tmp, timeout=900)
    if check: assert r.returncode == 0, r.stdout + r.stderr
    return r


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    "One briefly trained run directory of each model on the Markov corpus (8 token ids)."
    tmp = tmp_path_factory.mktemp('runs')
    for kind in KINDS: hdlm(tmp, *TRAIN, '--model', kind, '--out', tmp / kind)
    return tmp


def texts(runs, kind, *args):
    return [t.split() for t in json.loads(hdlm(runs, 'sample', '--ckpt', runs / kind, '-n', 4, '--steps', 16, '--json', *args).stdout)]


@pytest.mark.parametrize('kind', ['sedd', 'continuous', 'hybrid'])
def test_infill_keeps_the_given_tokens_and_fills_the_span(runs, kind):
    "The texts on both sides come out unchanged, the span has the asked length, and it changes with the seed."
    drawn = {seed: texts(runs, kind, '--infill', '1 2 3 ___ 4 5', '--span', 6, '--seed', seed) for seed in (0, 1)}
    for ts in drawn.values():
        for t in ts:
            assert len(t) == 3 + 6 + 2 and t[:3] == ['1', '2', '3'] and t[-2:] == ['4', '5'], t
            assert all(0 <= int(w) < 8 for w in t)
    assert [t[3:9] for t in drawn[0]] != [t[3:9] for t in drawn[1]]


@pytest.mark.parametrize('kind', KINDS)
def test_prefix_is_continued_by_every_model(runs, kind):
    for t in texts(runs, kind, '--prefix', '7 6 5', '--temperature', '0.8', '--top-p', '0.95'):
        assert len(t) == 64 and t[:3] == ['7', '6', '5'], t


def test_ar_refuses_to_infill_in_one_line(runs):
    r = hdlm(runs, 'sample', '--ckpt', runs / 'ar', '--infill', '1 ___ 2', check=False)
    assert r.returncode == 2 and r.stderr.count('\n') == 1, r.stderr
    assert r.stderr.startswith('error: ') and 'cannot infill' in r.stderr and '--prefix' in r.stderr


@pytest.mark.parametrize('args, msg', [(['--infill', '1 ___ 2 ___ 3'], 'exactly one ___'),
                                      (['--infill', '1 ___ 2', '--span', '70'], 'the model holds 64'),
                                      (['--prefix', 'the cat'], 'token ids separated by spaces'),
                                      (['--prefix', '1', '--infill', '1 ___ 2'], 'not both')])
def test_bad_prompts_get_one_line(runs, args, msg):
    r = hdlm(runs, 'sample', '--ckpt', runs / 'sedd', *args, check=False)
    assert r.returncode == 2 and r.stderr.count('\n') == 1 and msg in r.stderr, r.stderr


def test_sample_eval_json_rows(runs, tmp_path):
    """The first AR run judges (itself too); the data row comes first; each row has exactly the documented keys, with
    what the Gaussian segment changed in the hybrid's rows only."""
    r = hdlm(runs, 'sample-eval', '--ckpt', runs / 'sedd', runs / 'hybrid', runs / 'ar', '--steps', 4, 8, '-n', 8,
             '--out', tmp_path / 'q', '--json')
    rows = json.loads(r.stdout)
    assert [(x['model'], x['steps']) for x in rows] == [('data', None), ('sedd', 4), ('sedd', 8), ('hybrid', 4),
                                                        ('hybrid', 8), ('ar', 64)]
    assert all(list(x) == JSON_KEYS for x in rows) and [x['temperature'] for x in rows] == [None] + [1.0] * 5
    assert all(x['gen_ppl'] > 1 and 0 <= x['entropy'] <= 2.08 for x in rows)          # entropy <= log 8
    assert all((x['changed'] is None) == (x['model'] != 'hybrid') for x in rows)     # a hybrid's Gaussian segment
    assert all(0 <= x['remasked'] <= x['changed'] <= 1 for x in rows if x['model'] == 'hybrid')
    assert (tmp_path / 'q' / 'sample_eval.csv').exists() and (tmp_path / 'q' / 'sample_eval.png').stat().st_size > 0


def test_temperature_sweep_writes_the_frontier(runs, tmp_path):
    "One row per (model, steps, temperature), the AR model at its 64 steps; the frontier's files beside the usual ones."
    temps = [0.7, 0.9, 1.0]
    r = hdlm(runs, 'sample-eval', '--ckpt', runs / 'sedd', runs / 'ar', '--temperatures', *temps, '--steps', 2, 4,
             '-n', 4, '--out', tmp_path / 'q', '--json')
    rows = json.loads(r.stdout)
    assert [(x['model'], x['steps'], x['temperature']) for x in rows] == (
        [('data', None, None)] + [('sedd', s, T) for s in (2, 4) for T in temps] + [('ar', 64, T) for T in temps])
    assert all(list(x) == JSON_KEYS for x in rows)
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


def test_correction_study_reads_run_directories(runs):
    "The hybrid's self-correction from run directories, judged by the source: fractions in [0, 1], none for SEDD."
    from hybrid_dlm.sampling import correction_study
    df = correction_study([runs / 'sedd', runs / 'hybrid'], 'markov', steps=(8,), n=8, progress=False)
    rows = df.set_index('model')
    assert 0 <= rows.loc['hybrid', 'changed'] <= 1 and 0 <= rows.loc['hybrid', 'remasked'] <= rows.loc['hybrid', 'changed']
    assert rows.loc['sedd', ['changed', 'remasked']].isna().all()
