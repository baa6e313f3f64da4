"End-to-end checks of the data chapter through the `hdlm` command line (run as subprocesses, offline)."
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hybrid_dlm.data import (DataError, load_chunks, load_documents, make_loader, markov_source, markov_sequences)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample.wiki.raw"
STATS_KEYS = {"corpus", "split", "documents", "tokens", "chunks", "pad_fraction"}


def offline_env(tmp_path) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HDLM_CACHE_DIR=str(tmp_path / "cache"))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def hdlm(tmp_path, *args, timeout=300):
    "Run `python -m hybrid_dlm.cli ARGS` offline, with the cache in `tmp_path`."
    return subprocess.run([sys.executable, "-m", "hybrid_dlm.cli", *args], cwd=ROOT, env=offline_env(tmp_path),
                          capture_output=True, text=True, timeout=timeout)


def stats_json(tmp_path, *args) -> dict:
    r = hdlm(tmp_path, "data", "stats", "--json", *args)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1, r.stdout
    return json.loads(lines[0])


def test_help_lists_subcommands(tmp_path):
    r = hdlm(tmp_path, "--help")
    assert r.returncode == 0 and "data" in r.stdout
    r = hdlm(tmp_path, "data", "stats", "--help")
    assert r.returncode == 0 and "--corpus" in r.stdout and "--json" in r.stdout


def test_markov_stats(tmp_path):
    s = stats_json(tmp_path, "--corpus", "markov")
    assert set(s) == STATS_KEYS | {"exact_nll_per_token", "entropy_per_token"}
    assert (s["corpus"], s["split"], s["documents"], s["chunks"], s["tokens"], s["pad_fraction"]) == ("markov", "train", 4096, 4096, 4096 * 64, 0.0)
    src, ids = markov_source(), markov_sequences("train", 64)
    per_seq = src.nll(ids)
    assert s["exact_nll_per_token"] == pytest.approx(per_seq.sum() / ids.size, rel=1e-12)
    assert s["entropy_per_token"] == pytest.approx(src.entropy_per_token(64), rel=1e-12)
    # the split's NLL is a sample mean of the expected value: within 5 standard errors
    assert abs(s["exact_nll_per_token"] - s["entropy_per_token"]) < 5 * (per_seq / 64).std() / np.sqrt(len(per_seq))
    v = stats_json(tmp_path, "--corpus", "markov", "--split", "validation", "--seq-len", "16")
    assert (v["documents"], v["tokens"]) == (512, 512 * 16)


def test_markov_table(tmp_path):
    r = hdlm(tmp_path, "data", "stats", "--corpus", "markov", "--split", "test")
    assert r.returncode == 0, r.stderr
    rows = dict(line.split(None, 1) for line in r.stdout.strip().splitlines())
    assert rows["corpus"] == "markov" and rows["split"] == "test" and rows["documents"] == "512"
    assert "exact_nll_per_token" in rows


def test_wiki_vital_train(tmp_path):
    s = stats_json(tmp_path, "--corpus", "wiki-vital", "--split", "train")
    assert set(s) == STATS_KEYS
    assert 0.7e6 <= s["tokens"] <= 1.4e6
    assert s["documents"] == len(load_documents("wiki-vital", "train"))
    assert s["chunks"] * 64 * (1 - s["pad_fraction"]) == pytest.approx(s["tokens"])
    entries = list((tmp_path / "cache" / "chunks").glob("wiki-vital-train-L64-*"))
    assert len(entries) == 1 and (entries[0] / "ids.bin").exists() and (entries[0] / "meta.json").exists()
    assert stats_json(tmp_path, "--corpus", "wiki-vital", "--split", "train") == s   # from the cache


def test_wiki_vital_splits_disjoint():
    splits = {s: set(load_documents("wiki-vital", s)) for s in ("train", "validation", "test")}
    assert not splits["train"] & splits["validation"] and not splits["train"] & splits["test"] and not splits["validation"] & splits["test"]
    assert all(len(v) > 400 for v in splits.values())


BAD_INPUTS = {
    "unknown corpus": (["--corpus", "wikipedia"], ["unknown corpus 'wikipedia'", "wiki-vital", "markov", "path"]),
    "missing file": (["--corpus", "no/such/wiki.test.raw"], ["file not found: no/such/wiki.test.raw"]),
    "seq_len < 2": (["--corpus", "markov", "--seq-len", "1"], ["seq_len must be at least 2", "--seq-len 64"]),
    "unknown split": (["--corpus", "wiki-vital", "--split", "holdout"], ["unknown split 'holdout'", "validation"]),
    "hub offline (wikitext)": (["--corpus", "wikitext-2", "--split", "test"],
                               ["cannot reach the Hugging Face Hub", "wiki-vital", "markov", "--corpus path/to/wiki.test.raw"]),
    "hub offline (openwebtext)": (["--corpus", "openwebtext", "--max-docs", "10"], ["cannot reach the Hugging Face Hub", "wiki-vital"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input(tmp_path, case):
    args, needles = BAD_INPUTS[case]
    t0 = time.time()
    r = hdlm(tmp_path, "data", "stats", *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    for n in needles: assert n in r.stderr, r.stderr
    if "hub" in case: assert time.time() - t0 < 60   # fails at once, no retries


def test_empty_corpus(tmp_path):
    for name, text in [("empty.txt", "\n \n\n"), ("empty.jsonl", '{"text": ""}\n'), ("blank.raw", " \n \n")]:
        (tmp_path / name).write_text(text)
        r = hdlm(tmp_path, "data", "stats", "--corpus", str(tmp_path / name))
        assert r.returncode == 2 and r.stderr.startswith("error: ") and "has no tokens" in r.stderr, r.stderr


def test_local_formats(tmp_path):
    texts = ["One document.", "Another one,\nover two lines.", "A third."]
    (tmp_path / "c.txt").write_text("\n\n".join(texts))
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    for name in ["c.txt", "c.jsonl"]:
        s = stats_json(tmp_path, "--corpus", str(tmp_path / name), "--split", "mine")
        assert (s["documents"], s["split"], s["corpus"]) == (3, "mine", str(tmp_path / name))
    (tmp_path / "c.jsonl").write_text('{"body": "x"}\n')
    r = hdlm(tmp_path, "data", "stats", "--corpus", str(tmp_path / "c.jsonl"))
    assert r.returncode == 2 and "'text' field" in r.stderr


def test_wikitext_fixture_loads_and_detokenises(tmp_path):
    raw = SAMPLE.read_text(encoding="utf-8")
    assert " @-@ " in raw and " = = Description = = " in raw
    docs = load_documents(str(SAMPLE))
    assert len(docs) == 4 == raw.count("\n = ") - raw.count("\n = = ")
    test_docs = set(load_documents("wiki-vital", "test"))
    for doc in docs:
        heading, body, section, description = doc.split("\n\n")
        assert heading.startswith("= ") and heading.endswith(" =") and not heading.startswith("= =")
        assert section == "== Description =="
        assert "@" not in doc and " ," not in doc and " ." not in doc
        assert body in test_docs   # the detokeniser gives back the original article exactly
    assert "Anni-Frid Lyngstad" in docs[1]
    s = stats_json(tmp_path, "--corpus", str(SAMPLE), "--split", "test", "--seq-len", "32")
    assert (s["documents"], s["split"]) == (4, "test") and s["tokens"] > 200


def test_wikitext_valid_name_routes_to_wikitext(tmp_path):
    "A file named like WikiText's own (`wiki.test.raw`) is split into articles, like the Hub version."
    f = tmp_path / "wiki.test.raw"
    f.write_text(" \n = A = \n \n Some text @-@ here . \n \n = = Sub = = \n \n More . \n \n = B = \n \n Other ( text ) . \n")
    assert load_documents(str(f)) == ["= A =\n\nSome text-here.\n\n== Sub ==\n\nMore.", "= B =\n\nOther (text)."]


DIST_SCRIPT = """
import sys, json, torch, torch.distributed as dist
from hybrid_dlm.data import load_chunks, make_loader
rank, world, store, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
loader = make_loader(load_chunks("markov", "test", seq_len=16), 32, seed=5, loop=True, start_batch=3)
assert (loader.rank, loader.world_size) == (rank, world)
batches = [b["ids"].tolist() for _, b in zip(range(20), loader)]
json.dump(batches, open(out, "w"))
dist.barrier(); dist.destroy_process_group()
"""


def test_loader_ranks_with_torch_distributed(tmp_path):
    "Two gloo processes with half batches see exactly the single-process batches; rank and world size come from torch.distributed."
    script = tmp_path / "dist.py"
    script.write_text(DIST_SCRIPT)
    procs = [subprocess.Popen([sys.executable, str(script), str(r), "2", str(tmp_path / "store"), str(tmp_path / f"r{r}.json")],
                              cwd=ROOT, env=offline_env(tmp_path), stderr=subprocess.PIPE, text=True) for r in range(2)]
    for p in procs: assert p.wait(timeout=120) == 0, p.stderr.read()
    shards = [np.array(json.loads((tmp_path / f"r{r}.json").read_text())) for r in range(2)]
    single = make_loader(load_chunks("markov", "test", seq_len=16), 32, seed=5, loop=True, start_batch=3, rank=0, world_size=1)
    for k, b in zip(range(20), single):
        assert shards[0][k].shape == (16, 16)
        np.testing.assert_array_equal(np.concatenate([shards[0][k], shards[1][k]]), b["ids"].numpy())


def test_data_error_is_value_error():
    assert issubclass(DataError, ValueError)
    with pytest.raises(DataError, match="markov is a synthetic source"): load_documents("markov")
