"""Load → LoRA/QLoRA/full → train steps → save adapter → merge → reload, for every model family."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from tiny_models import FAMILIES, build_tiny_hf, minilm_path, randomize_lora_b
from tiny_models import train_steps as _train_steps

from embtune import FastSentenceTransformer
from embtune.errors import ConfigError, ModelLoadError

PROBE = ["A claim about cells.", "Vitamin D and bone density in older adults", "x"]


def _cos(a, b) -> torch.Tensor:
    return F.cosine_similarity(torch.as_tensor(a).float(), torch.as_tensor(b).float())


def _gap(a, b) -> float:
    return torch.as_tensor(a).float().sub(torch.as_tensor(b).float()).abs().max().item()


def assert_same_model(outputs: dict, live, base) -> None:
    """Every entry of ``outputs`` (name -> embeddings of PROBE) equals the live trained model's
    embeddings to within 2 % of how far training moved them from the base model's: a merge or reload
    that dropped the adapter (or applied it twice) differs by the whole shift, and fails."""
    shift = _gap(live, base)
    assert shift > 2e-4, f"training must have changed the embeddings (max shift {shift})"
    for name, emb in outputs.items():
        assert _gap(emb, live) <= shift / 50, f"{name} differs from the live model by {_gap(emb, live)} (shift {shift})"


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {fam: build_tiny_hf(root / fam, fam) for fam in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_train_save_merge_reload(family, tiny_dirs, tmp_path):
    model = FastSentenceTransformer.from_pretrained(tiny_dirs[family], dtype=torch.float32)
    model = FastSentenceTransformer.get_peft_model(model, r=4, lora_alpha=8)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert not any("pooler" in n for n in trainable)
    before, after = _train_steps(model)
    assert after < before
    live = model.encode(PROBE)

    model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "adapter" / "model.safetensors").exists()
    model.save_pretrained_merged(tmp_path / "merged")
    assert (tmp_path / "merged" / "model.safetensors").is_file()
    assert not (tmp_path / "merged" / "adapter_config.json").exists()

    merged_plain = SentenceTransformer(str(tmp_path / "merged"), device="cpu").encode(PROBE)
    adapter = FastSentenceTransformer.from_pretrained(tmp_path / "adapter", dtype=torch.float32,
                                                      for_inference=True).encode(PROBE)
    merged = FastSentenceTransformer.from_pretrained(tmp_path / "merged", dtype=torch.float32,
                                                     for_inference=True).encode(PROBE)
    base = FastSentenceTransformer.from_pretrained(tiny_dirs[family], dtype=torch.float32).encode(PROBE)
    assert_same_model({"merged (ST)": merged_plain, "adapter": adapter, "merged": merged}, live, base)
    with pytest.raises(AssertionError, match="differs from the live model"):  # control: the base fails it
        assert_same_model({"base": base}, live, base)


@pytest.mark.parametrize("family", ["bert", "qwen3"])
def test_qlora_train_merge_matches(family, tiny_dirs, tmp_path):
    # fp32 compute so that merged (dequantised fp32 + delta) and live (nf4 -> fp32) are the same maths.
    model = FastSentenceTransformer.from_pretrained(tiny_dirs[family], load_in_4bit=True, dtype=torch.float32)
    assert type(model.hf_model.get_submodule(_first_linear(model.hf_model))).__name__ == "Linear4bit"
    model = FastSentenceTransformer.get_peft_model(model, r=4, lora_alpha=8)
    before, after = _train_steps(model)
    assert after < before
    live = model.encode(PROBE)
    model.save_pretrained(tmp_path / "adapter")
    model.save_pretrained_merged(tmp_path / "merged")
    merged = SentenceTransformer(str(tmp_path / "merged"), device="cpu").encode(PROBE)
    reloaded = FastSentenceTransformer.from_pretrained(tmp_path / "adapter", load_in_4bit=True,
                                                       dtype=torch.float32, for_inference=True).encode(PROBE)
    base = FastSentenceTransformer.from_pretrained(tiny_dirs[family], load_in_4bit=True,
                                                   dtype=torch.float32).encode(PROBE)
    assert_same_model({"merged": merged, "reloaded adapter": reloaded}, live, base)


def _first_linear(hf) -> str:
    return next(n for n, m in hf.named_modules() if type(m).__name__ in {"Linear4bit", "Linear"})


def test_full_finetuning_trains_every_weight(tiny_dirs, tmp_path):
    model = FastSentenceTransformer.from_pretrained(tiny_dirs["bert"], full_finetuning=True)
    assert model.hf_model.dtype == torch.float32
    assert all(p.requires_grad for p in model.parameters())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    before_loss, after_loss = _train_steps(model, lr=1e-3)
    assert after_loss < before_loss
    changed = sum(not torch.equal(before[n], p) for n, p in model.named_parameters())
    assert changed > len(before) // 2
    model.save_pretrained(tmp_path / "full")
    assert (tmp_path / "full" / "model.safetensors").is_file()
    again = SentenceTransformer(str(tmp_path / "full"), device="cpu").encode(PROBE)
    assert _cos(again, model.encode(PROBE)).min() >= 0.9999


def test_full_finetuning_with_4bit_is_refused(tiny_dirs):
    with pytest.raises(ConfigError, match="exclude each other"):
        FastSentenceTransformer.from_pretrained(tiny_dirs["bert"], full_finetuning=True, load_in_4bit=True)


def test_real_minilm_defaults_and_st_equivalence():
    fast = FastSentenceTransformer.from_pretrained(minilm_path(), dtype=torch.float32, for_inference=True)
    ref = SentenceTransformer(minilm_path(), device="cpu")
    assert isinstance(fast, SentenceTransformer)
    assert fast.max_seq_length == ref.max_seq_length == 256
    assert _cos(fast.encode(PROBE), ref.encode(PROBE)).min() >= 0.99999
    bf16 = FastSentenceTransformer.from_pretrained(minilm_path(), dtype="bf16", max_seq_length=128)
    assert bf16.hf_model.dtype == torch.bfloat16 and bf16.max_seq_length == 128
    assert _cos(bf16.encode(PROBE), ref.encode(PROBE)).min() >= 0.99


def test_default_lora_targets_for_minilm_cover_every_body_linear():
    model = FastSentenceTransformer.get_peft_model(FastSentenceTransformer.from_pretrained(minilm_path()))
    wrapped = {n.split(".lora_A")[0] for n, _ in model.named_parameters() if ".lora_A." in n}
    assert len(wrapped) == 6 * 6  # 6 layers x (query, key, value, attn out, intermediate, output)
    lora_dtypes = {p.dtype for n, p in model.named_parameters() if "lora_" in n}
    assert lora_dtypes == {torch.float32}


def test_decoder_eos_left_padding_and_instruction(tiny_dirs):
    model = FastSentenceTransformer.from_pretrained(tiny_dirs["qwen3"], dtype=torch.float32,
                                                    instruction="Find the paper")
    tok = model.tokenizer
    assert tok.padding_side == "left"
    ids = model.preprocess(["a", "a longer text here"])["input_ids"]
    assert ids[0, -1].item() == tok.eos_token_id and ids[1, -1].item() == tok.eos_token_id
    assert ids[0, 0].item() == tok.pad_token_id  # left padded
    assert model.prompts["query"] == "Instruct: Find the paper\nQuery: "
    q = model.encode_query(["coffee"])
    manual = model.encode(["Instruct: Find the paper\nQuery: coffee"])
    assert _cos(q, manual).min() >= 0.99999
    d = model.encode_document(["coffee"])
    assert _cos(d, model.encode(["coffee"])).min() >= 0.99999
    assert _cos(q, d).min() < 0.9999


def test_pooling_override_and_plain_folder_pooling(tiny_dirs):
    model = FastSentenceTransformer.from_pretrained(tiny_dirs["bert"], pooling="cls")
    assert model[1].pooling_mode == "cls"
    auto = FastSentenceTransformer.from_pretrained(tiny_dirs["bert"])
    assert auto[1].pooling_mode == "mean" and type(auto[2]).__name__ == "Normalize"


def test_pickle_weights_refused_unless_allowed(tiny_dirs, tmp_path):
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    folder.mkdir()
    for name in os.listdir(tiny_dirs["bert"]):
        if name != "model.safetensors":
            (folder / name).write_bytes((Path(tiny_dirs["bert"]) / name).read_bytes())
    torch.save(load_file(Path(tiny_dirs["bert"]) / "model.safetensors"), folder / "pytorch_model.bin")
    assert not list(folder.glob("*.safetensors"))
    with pytest.raises(ModelLoadError, match="pickle") as err:
        FastSentenceTransformer.from_pretrained(folder)
    assert "pytorch_model.bin" in str(err.value)
    model = FastSentenceTransformer.from_pretrained(folder, allow_pickle=True, dtype=torch.float32)
    assert model.encode(PROBE).shape == (3, 64)


@pytest.mark.parametrize("bad", ["missing", "empty"])
def test_bad_model_folders_give_one_line_errors(bad, tmp_path):
    path = tmp_path / "nope" if bad == "missing" else tmp_path
    with pytest.raises(ModelLoadError) as err:
        FastSentenceTransformer.from_pretrained(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_save_is_atomic_on_failure(tiny_dirs, tmp_path, monkeypatch):
    model = FastSentenceTransformer.from_pretrained(tiny_dirs["bert"])
    target = tmp_path / "out"
    model.save_pretrained(target)
    first = sorted(os.listdir(target))

    def boom(*args, **kwargs):
        raise RuntimeError("disk died")

    monkeypatch.setattr(type(model[1]), "save", boom)
    with pytest.raises(RuntimeError):
        model.save_pretrained(target)
    assert sorted(os.listdir(target)) == first  # the old folder is intact
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp left behind


def test_trust_remote_code_is_off_by_default(tiny_dirs, tmp_path):
    folder = Path(tiny_dirs["bert"])
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "evil_model.EvilModel"}
    remote = tmp_path / "remote"
    remote.mkdir()
    for f in folder.iterdir():
        (remote / f.name).write_bytes(f.read_bytes())
    (remote / "config.json").write_text(json.dumps(config))
    (remote / "evil_model.py").write_text("raise SystemExit('remote code ran')\n")
    model = FastSentenceTransformer.from_pretrained(remote)  # must not import evil_model.py
    assert type(model.hf_model).__name__ == "BertModel"


def test_push_to_hub_merged_uploads_a_merged_folder(tiny_dirs, monkeypatch):
    import huggingface_hub

    uploaded = {}

    class FakeApi:  # only the network call is replaced: the Hub cannot exist offline
        def __init__(self, token=None):
            uploaded["token"] = token

        def create_repo(self, repo_id, private=None, exist_ok=False):
            return f"https://hub.example/{repo_id}"

        def upload_folder(self, repo_id, folder_path, commit_message, ignore_patterns=None):
            uploaded["files"] = sorted(os.listdir(folder_path))
            uploaded["emb"] = SentenceTransformer(folder_path, device="cpu").encode(PROBE)

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    model = FastSentenceTransformer.get_peft_model(
        FastSentenceTransformer.from_pretrained(tiny_dirs["bert"], dtype=torch.float32), r=4)
    randomize_lora_b(model)
    url = model.push_to_hub_merged("me/tuned", token="secret")
    assert url.endswith("me/tuned")
    assert "model.safetensors" in uploaded["files"] and "adapter_config.json" not in uploaded["files"]
    assert _cos(uploaded["emb"], model.encode(PROBE)).min() >= 0.9999
