"""`embtune train`: every model / LoRA / loss flag reaches the library and the saved folders, and the
resolved run_config.toml repeats the run."""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from cli_helpers import fingerprint, ok, saved
from safetensors import safe_open


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
    # --gradient-checkpointing reaches TrainConfig, and stays out of the fingerprint (it changes no number)
    assert config["gradient_checkpointing"] is True and "gradient_checkpointing" not in state
    assert json.loads((run / "trainer_state.json").read_text())["config"]["gradient_checkpointing"] is True


def test_saved_run_config_repeats_the_run(trained):
    run, _ = trained
    # Same settings -> same fingerprint: training resumes from the finished checkpoint (another
    # loss, prompt or LoRA shape would be refused as "a checkpoint of another run").
    result = ok("train", "--config", run / "run_config.toml")
    assert "trained 2 steps" in result.output
