"""``embtune label RUN --questions FILE``: judge pooled candidates of real questions, get qrels.

    embtune label RUN --questions questions.txt             # judge in the terminal (resumable)
    embtune label RUN --questions questions.txt --csv a.csv # or write a CSV to fill in ...
    embtune label RUN --from-csv a.csv                      # ... and read it back
    embtune label RUN --beir                                # also write RUN/labels/beir for `embtune eval`

The pool (top-k of the base model, the tuned model and BM25, shuffled) is `embtune.labeling.pool`;
the answer log, CSV and output files are `embtune.labeling.judgements`; the session is
`embtune.labeling.session`. Options are defined here: label shares none of ``cli/flags.py``'s table.
"""
from __future__ import annotations

from pathlib import Path

import click


@click.command("label")
@click.argument("run_dir", metavar="RUN", type=click.Path())
@click.option("--questions", "questions_path", type=click.Path(), default=None,
              help="Questions: one per line (.txt) or JSONL with \"text\" (and optional \"_id\"). "
                   "Not needed to resume or with --from-csv.")
@click.option("-k", "--top-k", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="Documents pooled from each system (base model, tuned model, BM25) per question.")
@click.option("--no-bm25", is_flag=True, help="Pool the base and tuned models only.")
@click.option("--model", default=None, help="Base model to pool (default: the run's --model).")
@click.option("--seed", type=int, default=42, show_default=True, help="Seed of the per-question shuffle.")
@click.option("--csv", "csv_out", type=click.Path(), default=None,
              help="Write the pool to this CSV (question_id, question, doc_id, text, relevant) to fill in.")
@click.option("--from-csv", "csv_in", type=click.Path(), default=None,
              help="Read a filled-in CSV's relevant column (1/0, y/n, a grade, blank = not judged) "
                   "as answers.")
@click.option("--beir", is_flag=True,
              help="Also write RUN/labels/beir (corpus.jsonl, queries.jsonl, qrels/test.tsv) for "
                   "`embtune eval`.")
@click.option("--corpus", type=click.Path(), default=None,
              help="The run's documents for --beir (default: the corpus in RUN/run_config.toml).")
@click.option("--ask-skipped", is_flag=True, help="Ask again the candidates skipped in earlier sessions.")
@click.option("--max-chars", type=click.IntRange(0), default=800, show_default=True,
              help="Cut passages after this many characters in the terminal (0: never).")
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
def label_command(run_dir, questions_path, top_k, no_bm25, model, seed, csv_out, csv_in, beir, corpus,
                  ask_skipped, max_chars, batch_size):
    """Judge the pooled top results of real questions on the run folder RUN, and write the answers as
    qrels (RUN/labels/qrels.tsv + queries.jsonl) for `from-corpus --eval-labels` and `embtune eval`.

    Every question shows with one pooled document at a time (keys y / n / s(kip) / q(uit)); answers
    are saved as they are given, so running the same command again resumes where it stopped.
    """
    from embtune.errors import ConfigError
    from embtune.labeling import judgements as J
    from embtune.labeling.pool import (LABELS_DIR, build_pool, check_run_dir, read_pooled_questions,
                                       read_questions)
    from embtune.labeling.session import judge, key_reader
    from embtune.pipeline.records import read_chunks
    from embtune.pipeline.console import make_console

    if csv_out and csv_in:
        raise ConfigError("give --csv (write the pool to fill in) or --from-csv (read it back), not both")
    run = check_run_dir(run_dir)
    labels = run / LABELS_DIR
    log = J.AnswerLog(labels / J.ANSWERS_FILE)
    console = make_console()
    pool = {}
    if csv_in:
        doc_ids = {c["doc_id"] for c in read_chunks(run / "chunks.jsonl", fields=("doc_id",))}
        added = log.append(J.read_answers_csv(csv_in, doc_ids))
        console.print(f"{added} answer(s) read from {csv_in}")
    elif questions_path or csv_out or (labels / "pool.json").is_file():
        questions = read_questions(questions_path) if questions_path else read_pooled_questions(run)
        pool = build_pool(run, questions, k=top_k, seed=seed, bm25=not no_bm25, model=model,
                          batch_size=batch_size, say=lambda line: console.print(f"[dim]{line}[/]"))
        chunks = {c["id"]: c for c in read_chunks(run / "chunks.jsonl", fields=("id", "title", "text"))}
        if csv_out:
            rows = J.write_answers_csv(csv_out, questions, pool, chunks, log.read())
            console.print(f"{rows} row(s) written to {csv_out}: fill in the relevant column (1 = relevant, "
                          f"0 = not, blank = not judged), then run: embtune label {run} --from-csv {csv_out}")
            return
        result = judge(console, questions, pool, chunks, log, key_reader(), max_chars, ask_skipped)
        if result["quit"]:
            console.print(f"\nstopped with {result['left']} candidate(s) left; every answer is saved in "
                          f"{log.path}. Run the same command to go on.")
        else:
            console.print("\nevery pooled candidate is judged.")
    elif not beir:
        raise ConfigError("give --questions FILE to start judging (or --from-csv FILE to read a filled-in "
                          "CSV)")
    _finish(console, run, labels, log, pool, beir, corpus)


def _finish(console, run: Path, labels: Path, log, pool, beir: bool, corpus) -> None:
    """Write the qrels (and the BEIR folder with ``beir``) from the answer log and say how to use them."""
    from embtune.labeling import judgements as J
    from embtune.labeling.session import corpus_documents, found_by_counts

    answers = log.read()
    info = J.write_label_files(labels, answers.values())
    skipped = sum(a.relevant is None for a in answers.values())
    if not info["qrels"]:
        console.print("no judgement yet: nothing written")
        return
    console.print(f"{info['judgements']} judgement(s) ({info['relevant']} relevant, {skipped} skipped) on "
                  f"{info['questions']} question(s)")
    found = found_by_counts(pool, answers)
    if found:
        console.print("relevant documents each system had found: "
                      + ", ".join(f"{name} {n}" for name, n in found.items()))
    console.print(f"  qrels    {info['qrels']}\n  queries  {info['queries']}")
    if info["relevant"] == 0:
        console.print("[yellow]![/] no document is judged relevant yet: evaluation needs at least one")
    console.print("evaluate a run on them: embtune from-corpus DOCS --out RUN2 "
                  f"--eval-labels {info['qrels']} --queries {info['queries']}")
    if beir:
        folder = J.write_beir_folder(labels / J.BEIR_DIR, corpus_documents(run, corpus), answers.values())
        model = run / "merged" if (run / "merged").is_dir() else "MODEL"
        console.print(f"  beir     {folder}\nevaluate a model on them: embtune eval {model} --data {folder}")
    else:
        console.print(f"for `embtune eval`, add --beir: embtune label {run} --beir")
