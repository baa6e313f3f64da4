"""The runtime policy: importing the package changes no process state, every command resolves one default device."""
import os, subprocess, sys
from pathlib import Path

import pytest
import torch

from hybrid_dlm import cli
from hybrid_dlm.runtime import default_device

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import importlib, os, pkgutil, torch
state = lambda: (dict(os.environ), torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                 torch.get_num_threads())
before = state()
import hybrid_dlm
for m in pkgutil.iter_modules(hybrid_dlm.__path__): importlib.import_module(f'hybrid_dlm.{m.name}')
from hybrid_dlm.runtime import apply_runtime, flushed_fraction
print(int(state() == before), flushed_fraction(2 ** 20))
apply_runtime(device='cpu')
"""


def test_import_leaves_process_state():
    "A fresh process that imports every module keeps its environment, TF32 flags, threads and denormals."
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', ''), HF_HUB_OFFLINE='1')
    out = subprocess.run([sys.executable, '-c', PROBE], capture_output=True, text=True, env=env, check=True).stdout.split()
    assert out == ['1', '0.0'], out


COMMANDS = {'train': ['train', '--model', 'sedd', '--out', 'x'], 'eval': ['eval', '--corpus', 'markov', '--oracle'],
            'sample': ['sample', '--ckpt', 'x'], 'sample-eval': ['sample-eval', '--ckpt', 'x'],
            'reproduce': ['reproduce', '--out', 'x'], 'bench': ['bench']}


@pytest.mark.parametrize('cuda', [False, True])
def test_every_command_resolves_one_default_device(monkeypatch, cuda):
    "Without --device every command runs on `default_device()` (CUDA pretended or not); --device is kept as given."
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)
    monkeypatch.delenv('LOCAL_RANK', raising=False)
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    seen = {}
    for name in ('run_train', 'run_eval', 'run_sample', 'run_sample_quality', 'run_reproduce', 'run_bench'):
        monkeypatch.setattr(cli, name, lambda args, name=name: seen.setdefault(name, args.device) and 0)
    try:
        for argv in COMMANDS.values(): assert cli.main(argv) == 0
        assert len(seen) == len(COMMANDS) and set(seen.values()) == {default_device()} == {'cuda' if cuda else 'cpu'}
        seen.clear()
        for argv in COMMANDS.values(): cli.main([*argv, '--device', 'cpu'])
        assert set(seen.values()) == {'cpu'}
        assert cli.main(['bench', '--device', 'gpu']) == 2           # an unknown device is one line, status 2
    finally: torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
