"""A damaged checkpoint and a second writer, from the command line: each refused in one line with status 2."""
import contextlib, io, os, shutil, signal, subprocess, sys, time
from pathlib import Path

import pytest

from hybrid_dlm.cli import main
from hybrid_dlm.train import LOCK
from test_train_cli import TRAIN, _env

EVAL = ['--corpus', 'markov', '--max-chunks', '8', '--time-samples', '1', '--json']


def run(*argv):
    "(status, stderr) of `hdlm argv`, in this process."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): status = main([str(a) for a in argv])
    return status, err.getvalue()


def one_error(status, err) -> str:
    lines = [l for l in err.strip().splitlines() if l.startswith('error: ') or 'Traceback' in l]
    assert status == 2 and len(lines) == 1 and err.strip().splitlines()[-1] == lines[0], err
    return lines[0]


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('trained')
    os.environ['HDLM_CACHE_DIR'] = str(tmp / 'cache')
    assert run(*TRAIN, '--model', 'sedd', '--steps', 2, '--out', tmp / 'run')[0] == 0
    return tmp / 'run'


def damage(f:Path, how:str):
    b = f.read_bytes()
    if how == 'delete': f.unlink()
    elif how == 'truncate': f.write_bytes(b[:len(b) // 2])
    else: m = len(b) // 2; f.write_bytes(b[:m] + bytes(x ^ 0xFF for x in b[m:m + 4096]) + b[m + 4096:])


@pytest.mark.parametrize('name', ['model.safetensors', 'ema.safetensors', 'state.pt'])
@pytest.mark.parametrize('how,says', [('delete', 'is missing'), ('truncate', 'holds'),
                                      ('flip', 'was altered since it was written')])
def test_a_damaged_file_is_refused_by_whatever_reads_it(trained, tmp_path, name, how, says):
    run_dir = tmp_path / 'run'; shutil.copytree(trained, run_dir)
    f = run_dir / 'checkpoint' / name
    damage(f, how)
    readers = [[*TRAIN, '--model', 'sedd', '--steps', 3, '--out', run_dir, '--resume']]
    if name == 'ema.safetensors': readers += [['eval', '--ckpt', run_dir, *EVAL], ['sample', '--ckpt', run_dir, '-n', 1]]
    for argv in readers:
        line = one_error(*run(*argv))
        assert f'{f} {says}' in line and 'retrain' in line, line


def test_two_writers_the_second_is_refused_and_a_killed_ones_lock_is_taken_over(trained, tmp_path):
    out = tmp_path / 'same'
    first = subprocess.Popen([sys.executable, '-m', 'hybrid_dlm.cli', *TRAIN, '--model', 'sedd', '--out', str(out),
                              '--steps', '100000', '--set', 'ckpt_every=100000'], env=_env(tmp_path), cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and first.poll() is None:
            if (out / LOCK).exists() and (out / LOCK).read_text().split()[:1] == [str(first.pid)]: break
            time.sleep(0.2)
        assert first.poll() is None, "the first writer ended early"
        line = one_error(*run(*TRAIN, '--model', 'sedd', '--out', out, '--steps', 2))
        assert f'pid {first.pid}' in line and 'being written by another run' in line, line
        line = one_error(*run('reproduce', '--preset', 'smoke', '--corpus', 'markov', '--out', out, '--models', 'sedd'))
        assert f'pid {first.pid}' in line, line
    finally:
        first.send_signal(signal.SIGKILL); first.wait()
    assert run(*TRAIN, '--model', 'sedd', '--out', out, '--steps', 2)[0] == 0          # the killed run's lock is free
    assert (out / LOCK).read_text().split()[0] == str(os.getpid())
