"""Exports write only inside their output, whatever the model folder says.

For every format (GGUF, TEI, ONNX) and the from-corpus export stage, every file under the test's
folder outside the output is snapshotted (path, kind, size, mtime, link target) before the export
and compared after: a model folder whose safetensors index or modules.json names ``../`` paths is
refused (before anything is written, and no outside file is copied in), a model folder made of
symbolic links (a Hugging Face cache snapshot) exports into plain files, and an output path that is
itself a symbolic link is replaced, never written through.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from embtune.errors import ExportError
from embtune.export import export_model

FORMATS = ["gguf", "tei", "onnx"]


def snapshot(root: Path, skip: Path) -> dict[str, tuple]:
    """``{relative path: (kind, size, mtime_ns, link target)}`` (folders: kind only) of everything under ``root`` except
    ``skip`` (the output) and what is inside it."""
    found = {}
    for path in [root, *root.rglob("*")]:
        if path == skip or skip in path.parents:
            continue
        st = path.lstat()
        link = os.readlink(path) if path.is_symlink() else None
        kind = "link" if link else "dir" if path.is_dir() else "file"
        # a folder's own mtime changes when an entry is renamed into it (the output): not compared
        found[str(path.relative_to(root))] = (kind, st.st_size, st.st_mtime_ns, link) if kind != "dir" else (kind,)
    return found


def _copy(tiny_merged, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_merged("bert"), tmp_path / "model"))


def _all_output_files(out: Path) -> list[Path]:
    return [p for p in out.rglob("*")] if out.is_dir() else [out]


@pytest.mark.parametrize("fmt", FORMATS)
def test_shard_names_climbing_out_are_refused(fmt, tiny_merged, tmp_path):
    model = _copy(tiny_merged, tmp_path)
    secret = tmp_path / "secret.safetensors"
    (model / "model.safetensors").rename(secret)
    index = {"metadata": {}, "weight_map": {}}
    from safetensors.numpy import load_file

    index["weight_map"] = {name: "../secret.safetensors" for name in load_file(str(secret))}
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    out = tmp_path / "out"
    before = snapshot(tmp_path, out)
    with pytest.raises(ExportError, match="outside the model folder") as err:
        export_model(model, fmt, out)
    assert err.value.path == str(model / "model.safetensors.index.json")
    assert snapshot(tmp_path, out) == before
    assert not out.exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_module_paths_climbing_out_are_refused(fmt, tiny_merged, tmp_path):
    model = _copy(tiny_merged, tmp_path)
    shutil.move(model / "1_Pooling", tmp_path / "1_Pooling")
    modules = json.loads((model / "modules.json").read_text())
    for module in modules:
        if module["type"].endswith("Pooling"):
            module["path"] = "../1_Pooling"
    (model / "modules.json").write_text(json.dumps(modules))
    out = tmp_path / "out"
    before = snapshot(tmp_path, out)
    with pytest.raises(ExportError, match="outside the model folder"):
        export_model(model, fmt, out)
    assert snapshot(tmp_path, out) == before and not out.exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_symlinked_model_files_and_symlinked_output(fmt, tiny_merged, tmp_path):
    """A model folder laid out like a Hugging Face cache snapshot (every file a link to a blob), and an
    output path that is a link to another folder: the export follows the model's links for reading,
    writes plain files, and replaces the output link instead of writing into the folder it names."""
    source = Path(tiny_merged("bert"))
    blobs, model = tmp_path / "blobs", tmp_path / "snapshot"
    blobs.mkdir()
    for path in source.rglob("*"):
        if path.is_file():
            link = model / path.relative_to(source)
            blob = blobs / path.relative_to(source).as_posix().replace("/", "__")
            shutil.copyfile(path, blob)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("untouched")
    out = tmp_path / ("out.gguf" if fmt == "gguf" else "out")
    if fmt == "gguf":
        out.symlink_to(elsewhere / "keep.txt")
        written_outside = {tmp_path / "Modelfile"}  # documented: the Modelfile goes beside a .gguf path
    else:
        out.symlink_to(elsewhere, target_is_directory=True)
        written_outside = set()
    before = snapshot(tmp_path, out)
    result = export_model(model, fmt, out)
    after = snapshot(tmp_path, out)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert {tmp_path / k for k in changed} == written_outside
    assert (elsewhere / "keep.txt").read_text() == "untouched" and sorted(os.listdir(elsewhere)) == ["keep.txt"]
    assert not out.is_symlink() and Path(result).exists()
    for path in _all_output_files(out):
        assert not path.is_symlink(), path
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_pipeline_export_stage_replaces_a_linked_exports_folder(tiny_merged, tmp_path):
    from embtune.pipeline.stages_model import export_stage

    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    run.mkdir()
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("untouched")
    (run / "exports").symlink_to(elsewhere, target_is_directory=True)
    before = snapshot(tmp_path, run / "exports")
    info = export_stage(Path(tiny_merged("bert")), run / "exports", ("tei",))
    assert snapshot(tmp_path, run / "exports") == before
    assert info["written"] == {"tei": str(run / "exports" / "tei")}
    assert not (run / "exports").is_symlink() and (run / "exports" / "tei" / "config.json").is_file()
    assert [p.name for p in run.iterdir()] == ["exports"]
