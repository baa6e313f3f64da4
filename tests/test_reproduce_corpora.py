"""The experiment on several evaluation corpora: one table per corpus, local files included, from the command line."""
import pandas as pd
import pytest

from hybrid_dlm.cli import main
from hybrid_dlm.data import DataError
from hybrid_dlm.experiment import FLOOR, reproduce


@pytest.fixture
def texts(tmp_path, monkeypatch):
    "Two small local corpora (blank-line separated documents), the Hub off and the chunk cache in `tmp_path`."
    for k in ('HF_HUB_OFFLINE', 'HF_DATASETS_OFFLINE', 'TRANSFORMERS_OFFLINE'): monkeypatch.setenv(k, '1')
    monkeypatch.setenv('HDLM_CACHE_DIR', str(tmp_path / 'cache'))
    words = "the river runs past the old mill where the miller counts his sacks of grain every morning".split()
    def write(name, n, shift):
        docs = [' '.join(words[(i * shift + j) % len(words)] for j in range(40 + i % 7)).capitalize() + '.' for i in range(n)]
        (tmp_path / name).write_text('\n\n'.join(docs))
        return tmp_path / name
    return write('train.txt', 60, 3), write('held.txt', 12, 5)


def test_reproduce_writes_one_table_per_corpus(tmp_path, texts, capsys):
    "`--set eval_corpora=A,B`: results.csv for the first corpus, results_<name>.csv for the other, results_all.csv for both."
    train, held = texts
    out = tmp_path / 'run'
    assert main(['reproduce', '--preset', 'smoke', '--models', 'ar', 'sedd', '--variants', '--out', str(out),
                 '--corpus', str(train), '--set', f'eval_corpora={train},{held}']) == 0
    main_table, other, both = (pd.read_csv(out / f) for f in ('results.csv', 'results_held.csv', 'results_all.csv'))
    assert list(main_table.model) == list(other.model) == ['ar', 'sedd', FLOOR]
    assert set(main_table.eval_corpus) == {str(train)} and set(other.eval_corpus) == {str(held)}
    assert len(both) == 6 and set(both.eval_corpus) == {str(train), str(held)}
    assert (other.ppl > 1).all() and (other.params == main_table.params).all()   # the same models, on another corpus
    for f in ('breakdown_held.csv', 'per_sequence_held.csv', 'ar/bound_held_test.json'): assert (out / f).exists(), f


def test_markov_skips_a_corpus_of_another_tokenizer(tmp_path, texts, capsys):
    "Models trained on markov (8 token ids) are evaluated on markov; a GPT-2 text file is reported and left out."
    out = tmp_path / 'run'
    df = reproduce('smoke', out, models=('sedd',), variants={}, progress=False, corpus='markov', emb_dim=8,
                   eval_corpora=['markov', str(texts[1])])
    assert list(df.model) == ['sedd', FLOOR] and 'exact_nll_per_token' in df
    assert 'cannot be evaluated' in capsys.readouterr().out
    assert (out / 'results.csv').exists() and not (out / 'results_held.csv').exists()


def test_unknown_eval_corpus_fails_before_training(tmp_path, texts):
    with pytest.raises(DataError, match='file not found'):
        reproduce('smoke', tmp_path / 'run', models=('sedd',), variants={}, progress=False, corpus='markov',
                  eval_corpora=['markov', str(tmp_path / 'missing.txt')])
    assert not (tmp_path / 'run' / 'sedd').exists()
