"""A 50 MB single document: ingested and chunked in bounded time, then a clean one-line refusal
(a single document cannot be split into training and held-out evaluation documents)."""
from __future__ import annotations

import json
import random
import time

import pytest
from click.testing import CliRunner

from embtune.cli import main

SIZE = 50 * 1024 * 1024
CPU_LIMIT_S = 600    # CPU seconds of this process: what the work costs, whatever else shares the machine
WALL_LIMIT_S = 7200  # only a guard against a hang on a heavily shared machine


def write_big_document(path, size: int = SIZE, seed: int = 0) -> int:
    """Write ~``size`` bytes of Markdown made of seeded pseudo-words (sections, paragraphs, sentences)."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 10))) for _ in range(20000)]
    written = 0
    with open(path, "w", encoding="utf-8") as fh:
        section = 0
        while written < size:
            section += 1
            parts = [f"## Section {section}: {' '.join(rng.choices(vocab, k=4))}\n\n"]
            for _ in range(rng.randint(20, 60)):
                sentences = (" ".join(rng.choices(vocab, k=rng.randint(6, 24))).capitalize() + "."
                             for _ in range(rng.randint(2, 7)))
                parts.append(" ".join(sentences) + "\n\n")
            block = "".join(parts)
            fh.write(block)
            written += len(block)
    return written


@pytest.mark.slow
def test_fifty_megabyte_document(tmp_path, tiny_model):
    big = tmp_path / "big.md"
    assert write_big_document(big) >= SIZE
    run = tmp_path / "run"
    started, cpu_started = time.monotonic(), time.process_time()
    result = CliRunner().invoke(main, ["from-corpus", str(big), "--out", str(run), "--model", tiny_model, "--quiet",
                                       "--max-seq-length", "128", "--chunk-tokens", "120"])
    elapsed, cpu = time.monotonic() - started, time.process_time() - cpu_started
    assert cpu < CPU_LIMIT_S and elapsed < WALL_LIMIT_S, (cpu, elapsed)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("embtune: error: ") and str(big) in lines[0], result.output
    assert "at least 2" in lines[0] and "--eval-labels" in lines[0]
    # the document itself went through: every chunk written, whole, within the token budget
    chunks = [json.loads(line) for line in (run / "chunks.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(chunks) > 50_000 and {c["doc_id"] for c in chunks} == {"big.md"}
    print(f"\n50 MB document: {len(chunks)} chunks, {cpu:.0f} CPU-s, {elapsed:.0f} s wall")
