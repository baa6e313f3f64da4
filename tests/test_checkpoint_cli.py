"""Checkpoints from the command line: no file is ever unpickled, every form of --ckpt works, old checkpoints convert."""
import json, os, pickle, random
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from hybrid_dlm.checkpoint import checkpoint_info, load_checkpoint
from hybrid_dlm.data import load_chunks, markov_source
from hybrid_dlm.likelihood import evaluate
from hybrid_dlm.models import build_model
from hybrid_dlm.backbone import count_params
from hybrid_dlm.train import EMA, preset_configs
from test_train_cli import TRAIN, hdlm

EVAL = ['--corpus', 'markov', '--max-chunks', 32, '--time-samples', 2, '--json']


class Payload:
    "Unpickling this runs a shell command that creates the file `marker`."
    def __init__(self, marker): self.marker = str(marker)
    def __reduce__(self): return (os.system, (f'touch {self.marker}',))


def one_error_line(r) -> str:
    "The single `error:` line of a refused command (status 2, no traceback)."
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith('error: '), r.stderr
    return lines[0]


@pytest.mark.parametrize('writer', ['torch.save', 'pickle.dump'])
def test_a_pickle_payload_is_never_run(tmp_path, writer):
    marker, evil = tmp_path / 'payload-ran', tmp_path / 'evil.pt'
    if writer == 'torch.save': torch.save({'config': {}, 'model': Payload(marker)}, evil)
    else: evil.write_bytes(pickle.dumps(Payload(marker)))
    for args, message in [(['eval', '--ckpt', evil, '--corpus', 'markov'], 'hdlm convert'),
                          (['sample', '--ckpt', evil], 'hdlm convert'),
                          (['convert', evil], 'nothing in it was run')]:
        assert message in one_error_line(hdlm(tmp_path, *args, check=False))
        assert not marker.exists(), f"{args[0]} ran the payload"
    try: torch.load(evil, weights_only=False)             # the payload is real: unpickling it runs it
    except RuntimeError: pass                             # (a bare pickle is no torch file, but it ran while read)
    assert marker.exists()


def test_what_is_not_a_checkpoint_is_one_line(tmp_path):
    (tmp_path / 'notes.txt').write_text('not a checkpoint\n' * 20); (tmp_path / 'empty').mkdir()
    for args in [['eval', '--ckpt', 'notes.txt', '--corpus', 'markov'], ['sample', '--ckpt', 'notes.txt'],
                 ['sample', '--ckpt', 'empty']]:
        assert 'is not a hybrid_dlm checkpoint' in one_error_line(hdlm(tmp_path, *args, check=False))
    assert 'No checkpoint at' in one_error_line(hdlm(tmp_path, 'sample', '--ckpt', 'missing', check=False))
    assert 'was refused' in one_error_line(hdlm(tmp_path, 'convert', 'notes.txt', check=False))


def test_every_form_of_ckpt_works(tmp_path):
    "The run directory, its checkpoint directory and its model.safetensors name the same checkpoint."
    r = hdlm(tmp_path, *TRAIN, '--model', 'sedd', '--out', 'run', '--steps', 2)
    assert r.stdout.strip().splitlines()[-1] == f"checkpoint: {os.path.join('run', 'checkpoint')}"
    bounds = [json.loads(hdlm(tmp_path, 'eval', '--ckpt', p, *EVAL).stdout)
              for p in ['run', 'run/checkpoint', 'run/checkpoint/model.safetensors']]
    assert bounds[0] == bounds[1] == bounds[2] and bounds[0]['nll_per_token'] > 0
    texts = json.loads(hdlm(tmp_path, 'sample', '--ckpt', 'run', '-n', 2, '--steps', 4, '--json').stdout)
    assert len(texts) == 2


def test_shared_modules_resume_exactly(tmp_path):
    "A hybrid with a shared trunk and one SEDD network for both segments resumes to the weights and EMA of one run."
    args = [*TRAIN, '--model', 'hybrid', '--set', 'shared_trunk=True', '--set', 'tie_discrete=True']
    hdlm(tmp_path, *args, '--out', 'full', '--steps', 6)
    hdlm(tmp_path, *args, '--out', 'part', '--steps', 3)
    hdlm(tmp_path, *args, '--out', 'part', '--steps', 6, '--resume')
    for weights in ['model', 'ema']:
        a, b = (load_checkpoint(tmp_path / run, weights).state_dict() for run in ('full', 'part'))
        for k in a: assert torch.equal(a[k], b[k]), (weights, k)
    assert checkpoint_info(tmp_path / 'part')['step'] == 6


def old_checkpoint(path, chunks, steps:int=2):
    "A checkpoint as older versions of the trainer wrote it (one torch.save of a dict), after `steps` steps of AdamW."
    mc, tc = preset_configs('smoke', 'hybrid', corpus='markov', emb_dim=8, lambda_b=4.0, shared_trunk=True)
    mc = replace(mc, vocab_size=chunks.vocab_size)
    torch.manual_seed(0); gen = torch.Generator().manual_seed(0)
    model = build_model(mc); opt = torch.optim.AdamW(model.parameters(), lr=tc.lr); ema = EMA(model, 0.5)
    x, m = torch.as_tensor(np.array(chunks.ids[:8])), torch.as_tensor(chunks.mask[:8])
    for _ in range(steps):
        model.loss(x, m, torch.rand(8, generator=gen, dtype=torch.float64), gen).mean().backward()
        opt.step(); opt.zero_grad(); ema.update(model)
    rng = {'torch': torch.get_rng_state(), 'numpy': np.random.get_state(), 'python': random.getstate(), 'cuda': None}
    torch.save({'config': mc.to_dict(), 'train_config': asdict(tc), 'model': model.state_dict(), 'ema': ema.shadow,
                'ema_state': ema.state_dict(), 'optimizer': opt.state_dict(), 'step': steps, 'tokens_seen': int(m.sum()) * steps,
                'train_seconds': 1.25, 'rng': rng, 'params': count_params(model)}, path)
    model.load_state_dict(ema.shadow)
    return model                                        # with the EMA weights, which evaluation uses


def test_an_old_checkpoint_converts_to_the_same_bound(tmp_path, monkeypatch):
    monkeypatch.setenv('HDLM_CACHE_DIR', str(tmp_path / 'cache'))
    chunks = load_chunks('markov', 'train', 64)
    (tmp_path / 'run').mkdir()
    model = old_checkpoint(tmp_path / 'run' / 'ckpt.pt', chunks)
    r = hdlm(tmp_path, 'eval', '--ckpt', 'run', *EVAL, check=False)
    assert 'convert it with `hdlm convert run/ckpt.pt`' in one_error_line(r)
    r = hdlm(tmp_path, *TRAIN, '--model', 'hybrid', '--set', 'shared_trunk=True', '--out', 'run', '--resume', check=False)
    assert 'hdlm convert' in one_error_line(r)

    assert hdlm(tmp_path, 'convert', 'run/ckpt.pt').stdout.strip() == f"checkpoint: {os.path.join('run', 'checkpoint')}"
    direct = evaluate(model, load_chunks('markov', 'test', 64), 2, max_chunks=32, progress=False, name='hybrid',
                      exact_source=markov_source()).to_dict()
    assert json.loads(hdlm(tmp_path, 'eval', '--ckpt', 'run', *EVAL).stdout) == direct
    assert {k: checkpoint_info(tmp_path / 'run')[k] for k in ('step', 'train_seconds')} == {'step': 2, 'train_seconds': 1.25}

    # the converted run resumes (its training state loads with weights_only=True), and is not converted twice
    hdlm(tmp_path, *TRAIN, '--model', 'hybrid', '--set', 'shared_trunk=True', '--out', 'run', '--resume', '--steps', 4)
    assert checkpoint_info(tmp_path / 'run')['step'] == 4
    assert 'already exists' in one_error_line(hdlm(tmp_path, 'convert', 'run/ckpt.pt', check=False))
