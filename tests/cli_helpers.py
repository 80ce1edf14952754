"""Helpers of the CLI tests: run a command in-process, expect success or a one-line error, and
spy on what training was given.

The training runs use the tiny random BERT (2 steps); ``Spy`` wraps ``embtune.losses.get_loss`` and
``embtune.training.train`` only to record what they were given, then calls the real functions.
"""
from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from embtune.cli import main
from embtune.pipeline.run_config import RUN_CONFIG, read_config_file

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


TINY_BEIR_DOCS = ["a cat sat on the mat", "dogs bark at night", "the stock market fell", "rain in spain",
                  "a kitten on a rug", "interest rates rose"]


def write_tiny_beir(root: Path) -> Path:
    """Write a 6-document BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv with 2 queries, one of
    them with a grade-2 document) into ``root``; returns ``root``."""
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n"
                                               for i, t in enumerate(TINY_BEIR_DOCS)))
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "cats on mats"}\n'
                                        '{"_id": "q2", "text": "markets and rates"}\n')
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td0\t1\nq1\td4\t1\n"
                                             "q2\td2\t1\nq2\td5\t2\n")
    return root
