"""End-to-end checks of training from the command line: several processes, resuming after a kill, the experiment, bad input."""
import json, os, signal, subprocess, sys, time
from pathlib import Path

import pandas as pd
import pytest
import torch

from hybrid_dlm.checkpoint import CheckpointError, checkpoint_info, load_checkpoint
from hybrid_dlm.experiment import BEST_VARIANT, FLOOR

ROOT = Path(__file__).resolve().parent.parent


def _env(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1', HDLM_CACHE_DIR=str(tmp_path / 'cache'),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', ''))
    return env


def hdlm(tmp_path, *args, check=True, launcher=(sys.executable, '-m', 'hybrid_dlm.cli')):
    r = subprocess.run([*launcher, *map(str, args)], capture_output=True, text=True, env=_env(tmp_path), cwd=tmp_path, timeout=900)
    if check: assert r.returncode == 0, r.stdout + r.stderr
    return r


def weights(run):
    return load_checkpoint(run).state_dict()


def saved_step(run) -> int:
    "The step of the checkpoint in `run` (-1 while there is none, or while a save renames it under our feet)."
    try: return checkpoint_info(run)['step']
    except (CheckpointError, OSError): return -1


TRAIN = ['train', '--preset', 'smoke', '--corpus', 'markov', '--set', 'emb_dim=8', '--lambda-b', '4']


@pytest.mark.parametrize('model', ['sedd', 'hybrid'])
def test_torchrun_two_processes_match_one(tmp_path, model):
    "Two processes of one shard each give the weights of one process of two micro-batches (same global batch)."
    torchrun = Path(sys.executable).with_name('torchrun')
    hdlm(tmp_path, *TRAIN, '--model', model, '--out', tmp_path / 'two', '--steps', 4,
         launcher=(str(torchrun), '--standalone', '--nproc_per_node', '2', '-m', 'hybrid_dlm.cli'))
    hdlm(tmp_path, *TRAIN, '--model', model, '--out', tmp_path / 'one', '--steps', 4, '--set', 'micro_batches=2')
    a, b = weights(tmp_path / 'two'), weights(tmp_path / 'one')
    assert a.keys() == b.keys()
    for k in a: torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6, msg=k)


def test_resume_after_kill_is_exact(tmp_path):
    "Kill a training process after a checkpoint, resume it, and get bitwise the weights of an uninterrupted run."
    args = [*TRAIN, '--model', 'hybrid', '--steps', 30, '--set', 'ckpt_every=3', '--set', 'log_every=1']
    hdlm(tmp_path, *args, '--out', tmp_path / 'full')
    proc = subprocess.Popen([sys.executable, '-m', 'hybrid_dlm.cli', *map(str, args), '--out', str(tmp_path / 'killed')],
                            env=_env(tmp_path), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed, deadline = tmp_path / 'killed', time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if saved_step(killed) >= 6: break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL); proc.wait()
    step = checkpoint_info(killed)['step']
    assert 6 <= step < 30, f"the run was not interrupted mid-way (checkpoint at step {step})"
    hdlm(tmp_path, *args, '--out', killed, '--resume')
    a, b = weights(tmp_path / 'full'), weights(killed)
    for k in a: assert torch.equal(a[k], b[k]), k
    steps = [json.loads(l)['step'] for l in (tmp_path / 'killed' / 'metrics.jsonl').read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 30


def test_reproduce_smoke_writes_results(tmp_path):
    "A smoke-sized experiment writes a well-formed results.csv, the checkpoints and the plots."
    r = hdlm(tmp_path, 'reproduce', '--preset', 'smoke', '--corpus', 'markov', '--out', tmp_path / 'run', '--set', 'emb_dim=8',
             '--lambda-b', '4')
    df = pd.read_csv(tmp_path / 'run' / 'results.csv')
    assert list(df.columns[:8]) == ['model', 'ppl', 'ppl_stderr', 'nll_per_token', 'tokens', 'train_tokens', 'train_seconds', 'params']
    assert list(df.model) == ['ar', 'sedd', 'continuous', 'hybrid', BEST_VARIANT, FLOOR]   # the paper's four, the best variant, the floor
    assert (df.ppl > 1).all() and (df.ppl_stderr >= 0).all() and (df.tokens == df.tokens[0]).all() and (df.params > 0).all()
    assert (df.nll_per_token >= df.exact_nll_per_token - 3 * df.nll_stderr).all()      # bounds, on the Markov source
    for f in ['training_curves.png', 'ppl.png', 'bound_breakdown.png'] + [f'{m}/checkpoint/config.json' for m in df.model if m != FLOOR]:
        assert (tmp_path / 'run' / f).exists(), f
    assert 'paper PPL' in r.stdout


@pytest.mark.parametrize('args,message', [
    (['train', '--model', 'gpt', '--out', 'x'], "invalid choice: 'gpt'"),
    (['train', '--model', 'hybrid', '--preset', 'smoke', '--out', 'x', '--chain', 'mask 0.8 gauss 0.3 mask'], 'increase strictly'),
    (['train', '--model', 'sedd', '--preset', 'smoke', '--out', 'x', '--steps', '0'], 'must be a positive integer, got 0'),
    (['train', '--model', 'hybrid', '--out', 'x', '--a', '0.8', '--b', '0.3'], "--chain 'mask 0.35 gauss 0.75 mask'"),
    (['sample', '--ckpt', 'x', '--top-p', '1.5'], 'argument --top-p: must be in (0, 1], got 1.5'),
    (['train', '--model', 'sedd', '--preset', 'smoke', '--out', 'x', '--set', 'depth=3'], 'Unknown options'),
    (['eval', '--ckpt', 'missing.pt', '--corpus', 'markov'], 'No checkpoint'),
    (['eval', '--oracle', '--corpus', 'wiki-vital'], '--oracle needs --corpus markov'),
])
def test_bad_input_is_one_clear_error(tmp_path, args, message):
    r = hdlm(tmp_path, *args, check=False)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert 'Traceback' not in r.stderr


def test_checkpoint_of_another_config_is_refused(tmp_path):
    hdlm(tmp_path, *TRAIN, '--model', 'sedd', '--out', tmp_path / 'run', '--steps', 2)
    r = hdlm(tmp_path, *TRAIN, '--model', 'sedd', '--out', tmp_path / 'run', '--steps', 2, '--resume', '--lr', '0.5', check=False)
    assert r.returncode == 2 and 'another configuration' in r.stderr and 'train.lr' in r.stderr
    r = hdlm(tmp_path, *TRAIN, '--model', 'ar', '--out', tmp_path / 'run', '--steps', 2, '--resume', check=False)
    assert r.returncode == 2 and 'model.kind' in r.stderr
    r = hdlm(tmp_path, *TRAIN, '--model', 'sedd', '--out', tmp_path / 'run', '--steps', 2, check=False)
    assert r.returncode == 2 and 'pass --resume' in r.stderr
