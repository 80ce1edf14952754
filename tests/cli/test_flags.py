"""Every library option from the CLI: each flag of train / from-corpus / pairs reaches the library
(seen in the objects training used and in what the run wrote), ``--config`` files with flags over
them, the resolved ``run_config.toml`` that repeats a run, ``embtune push``, and the README table.

The training runs use the tiny random BERT (2 steps); spies wrap ``embtune.losses.get_loss`` and
``embtune.training.train`` only to record what they were given, then call the real functions.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from pipeline_helpers import TINY_ARGS
from safetensors import safe_open

from embtune.cli import main
from embtune.cli.flags import COMMANDS, FLAGS, LORA_COMPUTE, flags_of, markdown_table
from embtune.pipeline.run_config import RUN_CONFIG, dump_run_config, read_config_file

README = Path(__file__).resolve().parents[2] / "README.md"
TOKEN = "hf_SECRETsecretSECRETsecret0123456789"
SMALL = ["--max-steps", "2", "--batch-size", "4", "--max-seq-length", "32"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def ok(*args):
    result = invoke(*args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def one_line_error(*args) -> str:
    result = invoke(*args)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("embtune: error: "), result.output
    return lines[0]


def scored_pairs(path: Path) -> Path:
    """16 (sentence1, sentence2, label) rows: data every loss of the table can train on."""
    rows = [f"question {i} about cell growth,answer {i} on proteins and cells,{(i % 5) / 4}" for i in range(16)]
    path.write_text("sentence1,sentence2,label\n" + "\n".join(rows) + "\n")
    return path


class Spy:
    """Records the loss module ``get_loss`` built and the model ``train`` was given."""

    def __init__(self, monkeypatch):
        import embtune.losses as losses
        import embtune.training as training

        real_get_loss, real_train = losses.get_loss, training.train
        self.loss = self.base_dtype = self.lora_layers = self.compute = None

        def get_loss(*args, **kwargs):
            self.loss = real_get_loss(*args, **kwargs)
            return self.loss

        def train(model, *args, **kwargs):
            params = dict(model.named_parameters())
            self.base_dtype = next(p.dtype for n, p in params.items() if "lora_" not in n)
            self.lora_layers = sorted({n.split(".lora_")[0].rsplit(".", 1)[-1] for n in params if "lora_A" in n})
            self.compute = {m.embtune_compute for m in model.modules() if hasattr(m, "embtune_compute")}
            return real_train(model, *args, **kwargs)

        monkeypatch.setattr(losses, "get_loss", get_loss)
        monkeypatch.setattr(training, "train", train)


def saved(run: Path) -> dict:
    """The run_config.toml of ``run``, read back by the ``--config`` reader."""
    return read_config_file(run / RUN_CONFIG)[0]


def fingerprint(run: Path) -> dict:
    newest = max((run / "checkpoints").iterdir(), key=lambda p: int(p.name.split("-")[1]))
    return json.loads((newest / "state.json").read_text())["fingerprint"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model):
    """One `embtune train` run with every model/LoRA/loss flag set away from its default."""
    root = tmp_path_factory.mktemp("train-flags")
    with pytest.MonkeyPatch.context() as mp:
        spy = Spy(mp)
        ok("train", "--data", scored_pairs(root / "scores.csv"), "--out", root / "run", "--model", tiny_model,
           "--loss", "CoSENT", "--matryoshka-dims", "32,16", "--query-prompt", "query: ", "--document-prompt",
           "passage: ", "--lora-target-modules", "query,value", "--lora-r", "4", "--lora-alpha", "8",
           "--lora-dropout", "0.1", "--lora-compute", "exact", "--dtype", "fp32", *SMALL)
    return root / "run", spy


def test_train_flags_reach_the_loss_model_adapter_and_saved_model(trained):
    from embtune.losses import CoSENTLoss, MatryoshkaLoss

    run, spy = trained
    assert isinstance(spy.loss, MatryoshkaLoss) and isinstance(spy.loss.loss, CoSENTLoss)
    assert spy.base_dtype == torch.float32 and spy.compute == {"exact"}
    assert spy.lora_layers == ["query", "value"]  # key, dense and the MLP linears get no LoRA
    with safe_open(str(run / "adapter" / "adapter_model.safetensors"), "pt") as fh:
        assert {re.search(r"\.(\w+)\.lora_[AB]", k).group(1) for k in fh.keys()} == {"query", "value"}
    adapter = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"], adapter["lora_dropout"]) == (4, 8, 0.1)
    assert sorted(adapter["target_modules"]) == ["query", "value"]
    prompts = json.loads((run / "merged" / "config_sentence_transformers.json").read_text())["prompts"]
    assert prompts["query"] == "query: " and prompts["document"] == "passage: "
    state = fingerprint(run)
    assert state["loss"] == "cosent" and state["matryoshka_dims"] == [32, 16]
    config = saved(run)
    assert config["command"] == "train" and config["loss"] == "cosent" and config["matryoshka_dims"] == [32, 16]
    assert config["lora_target_modules"] == ["query", "value"] and config["dtype"] == "fp32"
    assert Path(config["out"]).is_absolute() and config["out"] == str(run.resolve())
    assert "lora_alpha" in config and "save_steps" not in config  # None is written as a comment


def test_saved_run_config_repeats_the_run(trained):
    run, _ = trained
    # Same settings -> same fingerprint: training resumes from the finished checkpoint (another
    # loss, prompt or LoRA shape would be refused as "a checkpoint of another run").
    result = ok("train", "--config", run / "run_config.toml")
    assert "trained 2 steps" in result.output


def test_config_file_with_flags_over_it(tmp_path, tiny_model, monkeypatch):
    config = tmp_path / "run.yaml"
    config.write_text(f"data: {scored_pairs(tmp_path / 's.csv')}\nout: {tmp_path / 'run'}\nmodel: {tiny_model}\n"
                      "loss: cosent\nlora-r: 4\nmax_steps: 1\nbatch_size: 4\nmax_seq_length: 32\ndtype: fp32\n"
                      "lr: 1e-3\n")
    spy = Spy(monkeypatch)
    ok("train", "--config", config, "--loss", "cosine_mse", "--dtype", "bf16")
    from embtune.losses import CosineMSELoss

    assert type(spy.loss) is CosineMSELoss and spy.base_dtype == torch.bfloat16
    config = saved(tmp_path / "run")
    assert (config["loss"], config["dtype"], config["lora_r"], config["max_steps"], config["lr"]) == \
        ("cosine_mse", "bf16", 4, 1, 1e-3)
    assert json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())["r"] == 4


def test_config_file_mistakes_are_one_line_naming_file_line_and_key(tmp_path):
    def config(name: str, text: str) -> Path:
        (tmp_path / name).write_text(text)
        return tmp_path / name

    bad_key = config("a.toml", "lora_r = 4\nlearning_rate = 0.1\n")
    assert f"{bad_key}:2: unknown key 'learning_rate'" in one_line_error("train", "--config", bad_key)
    assert "did you mean 'lr'" in one_line_error("train", "--config", bad_key)
    bad_value = config("b.toml", "data = 'x.jsonl'\nout = 'o'\nbatch_size = 1\n")
    assert f"{bad_value}:3: batch_size:" in one_line_error("train", "--config", bad_value)
    # the command line replaces the bad value, so its mistake no longer matters
    line = one_line_error("train", "--config", bad_value, "--batch-size", "4", "--qlora", "--full")
    assert "--qlora and --full" in line
    syntax = config("c.toml", "lora_r = = 4\n")
    assert f"{syntax}:1: invalid TOML" in one_line_error("train", "--config", syntax)
    other = config("d.json", '{"command": "from-corpus", "chunk_tokens": 64}')
    assert "not `embtune train`" in one_line_error("train", "--config", other)
    table = config("e.toml", "[train]\nlora_r = 4\n")
    assert f"{table}:1: 'train' is a table" in one_line_error("train", "--config", table)
    assert "does not exist" in one_line_error("train", "--config", tmp_path / "none.toml")
    assert "Missing option '--out'" in one_line_error("train", "--data", "x.jsonl")
    assert "--instruction and --query-prompt" in one_line_error(
        "train", "--data", "x", "--out", "o", "--instruction", "find", "--query-prompt", "q: ")


def test_push_uploads_the_folder_and_never_shows_the_token(trained, monkeypatch, capsys):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    run, _ = trained
    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id, kw))
                        or f"https://huggingface.co/{repo_id}")

    def upload(self, **kw):
        files = sorted(p.name for p in Path(kw["folder_path"]).iterdir())
        calls.append(("upload", self.token, kw, files))

    monkeypatch.setattr(HfApi, "upload_folder", upload)
    result = ok("push", run / "adapter", "--repo-id", "me/tuned", "--private", "--token", TOKEN)
    assert result.output.strip() == f"uploaded adapter {run / 'adapter'} to https://huggingface.co/me/tuned"
    (create, repo, kwargs), (_, token, upload_kwargs, files) = calls
    assert repo == "me/tuned" and kwargs["private"] is True and token == TOKEN
    assert upload_kwargs["folder_path"] == str(run / "adapter") and upload_kwargs["repo_id"] == "me/tuned"
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(files)
    assert ok("push", run / "merged", "--repo-id", "me/merged").output.startswith("uploaded model ")

    def refused(self, **kw):
        import httpx2

        url = f"https://huggingface.co/api/me/tuned/upload?token={self.token}"
        raise HfHubHTTPError(f"401 Client Error: Unauthorized for url: {url}",
                             response=httpx2.Response(401, request=httpx2.Request("POST", url)))

    monkeypatch.setattr(HfApi, "upload_folder", refused)
    line = one_line_error("push", run / "merged", "--repo-id", "me/tuned", "--token", TOKEN)
    assert "401" in line and "[token redacted]" in line and TOKEN not in line
    assert "does not exist" in one_line_error("push", run.parent / "none", "--repo-id", "me/x")
    (run.parent / "manifest.json").write_text("{}")
    assert "push its merged/ or adapter/" in one_line_error("push", run.parent, "--repo-id", "me/x")
    assert "not a Hub repo id" in one_line_error("push", run / "merged", "--repo-id", "a/b/c")


def test_pair_filter_flags_reach_filter_pairs(tmp_path, small_corpus, tiny_model):
    from embtune.models import FastSentenceTransformer
    from embtune.models.inference import encode_texts

    run = tmp_path / "run"
    base = ["pairs", small_corpus, "--out", run, "--model", tiny_model, *TINY_ARGS, "--negatives", "0", "--quiet"]

    def kept() -> dict:
        return json.loads((run / "manifest.json").read_text())["stages"]["pairs"]["info"]

    ok(*base)
    default = kept()
    ok(*base, "--filter-top-k", "0", "--min-cosine", "-1")  # no rank test, every cosine passes
    everything = kept()
    dropped = everything["filter"]["dropped"]
    assert dropped["not_top_k"] == 0 and everything["kept"] > default["kept"]
    # without the rank/cosine test only duplicates (exact or near, a property of the texts) are dropped
    assert everything["kept"] == everything["built"] - sum(dropped.values())
    pairs = [json.loads(line) for line in (run / "work" / "pairs.built.jsonl").read_text().splitlines()]
    row = {json.loads(line)["id"]: r for r, line in enumerate((run / "chunks.jsonl").read_text().splitlines())}
    assert all(p["positive_id"] in row for p in pairs)  # a positive is scored by its chunk's embedding
    chunk_emb = np.load(run / "work" / "chunk_embeddings.npy")
    model = FastSentenceTransformer.from_pretrained(tiny_model, max_seq_length=64, for_inference=True)
    q = encode_texts(model, [p["query"] for p in pairs], "query", batch_size=64)
    cosines = sorted((q * chunk_emb[[row[p["positive_id"]] for p in pairs]]).sum(axis=1).tolist())
    threshold = (cosines[len(cosines) // 2 - 1] + cosines[len(cosines) // 2]) / 2
    ok(*base, "--filter-top-k", "0", "--min-cosine", f"{threshold:.6f}")
    assert kept()["kept"] == sum(c >= threshold for c in cosines) < everything["kept"]
    assert "no pair survived" in one_line_error(*base, "--filter-top-k", "0", "--min-cosine", "0.9999")
    config = saved(run)
    assert config["command"] == "pairs" and config["filter_top_k"] == 0 and "force" not in config


def test_from_corpus_training_flags_and_config_rerun(tmp_path, small_corpus, tiny_model):
    run = tmp_path / "run"
    ok("from-corpus", small_corpus, "--out", run, "--model", tiny_model, *TINY_ARGS, "--negatives", "0",
       "--max-steps", "2", "--batch-size", "8", "--loss", "infonce-symmetric", "--matryoshka-dims", "32",
       "--query-prompt", "query: ", "--lora-target-modules", "query,value", "--lora-alpha", "4", "--dtype", "fp32",
       "--quiet")
    report = json.loads((run / "report.json").read_text())
    assert report["settings"]["loss"] == "infonce_symmetric" and report["settings"]["matryoshka_dims"] == [32]
    state = fingerprint(run)
    assert state["loss"] == "infonce_symmetric" and state["prompts"]["query"] == "query: "
    assert {re.search(r"\.(\w+)\.lora_", n).group(1) for n in state["trainable"]} == {"query", "value"}
    adapter = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert adapter["lora_alpha"] == 4 and sorted(adapter["target_modules"]) == ["query", "value"]
    prompts = json.loads((run / "merged" / "config_sentence_transformers.json").read_text())["prompts"]
    assert prompts["query"] == "query: "
    stamps = json.loads((run / "manifest.json").read_text())["stages"]
    result = ok("from-corpus", "--config", run / "run_config.toml")  # the saved config alone repeats the run
    assert json.loads((run / "manifest.json").read_text())["stages"] == stamps, result.output
    assert "--min-cosine filters built pairs" in one_line_error(
        "from-corpus", small_corpus, "--out", tmp_path / "x", "--pairs", "labels", "--labels", run / "eval.jsonl",
        "--queries", run / "eval.jsonl", "--min-cosine", "0.7")


def test_the_table_builds_every_option(tmp_path):
    from embtune.models.fast_lora import COMPUTE_MODES

    assert sorted(LORA_COMPUTE) == sorted(COMPUTE_MODES)
    for command in COMMANDS:
        params = {p.name for p in main.commands[command].params} - {"help"}
        assert params == {f.param for f in flags_of(command)}, command
        for flag in flags_of(command):
            flag.default_for(command)  # every default comes from the settings class or the row
    table = markdown_table()
    assert len(table.strip().splitlines()) == len(FLAGS) + 2
    (tmp_path / RUN_CONFIG).write_text(dump_run_config({"a": None, "b": [1, 2], "c": 'q "x"\n', "d": 2e-4}, "train"))
    assert saved(tmp_path) == {"command": "train", "b": [1, 2], "c": 'q "x"\n', "d": 2e-4}
    assert ok("flags", "--markdown").output == table


def test_readme_flag_table_matches_the_code():
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- flags:start -->\n(.*?)<!-- flags:end -->", text, re.S)
    assert match, "README.md has no flag table: paste the output of `embtune flags --markdown` between " \
                  "<!-- flags:start --> and <!-- flags:end -->"
    assert match.group(1) == markdown_table(), "README flag table is stale: paste `embtune flags --markdown`"
