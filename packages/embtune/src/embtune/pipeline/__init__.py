"""``embtune from-corpus``: documents in, a fine-tuned, evaluated embedding model out.

``run_pipeline(RunSettings(corpus=..., out=...))`` runs ingest+chunk -> embed -> pairs (+filter) ->
held-out split -> hard negatives -> baseline eval -> train -> merge -> eval -> export -> report in a
run folder, skipping stages whose inputs are unchanged (see ``embtune.pipeline.manifest``).
"""
from embtune.pipeline.settings import RunSettings


def run_pipeline(*args, **kwargs):
    """See ``embtune.pipeline.from_corpus.run_pipeline`` (imported lazily: it pulls in torch)."""
    from embtune.pipeline.from_corpus import run_pipeline as run

    return run(*args, **kwargs)


__all__ = ["RunSettings", "run_pipeline"]
