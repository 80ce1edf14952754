"""Judge real questions against a run's documents: pooled candidates in, BEIR qrels out (``embtune label``).

* ``embtune.labeling.pool``: read a questions file, pool the top-k documents of the base model, the
  tuned model (``RUN/merged``) and BM25 per question, shuffled so the judge cannot tell who found what.
* ``embtune.labeling.judgements``: the append-only answer log (``RUN/labels/answers.jsonl``), the
  CSV round trip, and the files the answers become (``RUN/labels/queries.jsonl`` + ``qrels.tsv``, and
  optionally a BEIR folder ``RUN/labels/beir`` for ``embtune eval``).

Judgements are per document (the ids of chunks.jsonl's ``doc_id``), the unit ``from-corpus
--eval-labels`` reads; the passage shown for a document is its best-ranked chunk.
"""
from embtune.labeling.judgements import AnswerLog, read_answers_csv, write_answers_csv, write_label_files
from embtune.labeling.pool import Candidate, Question, build_pool, read_questions

__all__ = ["AnswerLog", "Candidate", "Question", "build_pool", "read_answers_csv", "read_questions",
           "write_answers_csv", "write_label_files"]
