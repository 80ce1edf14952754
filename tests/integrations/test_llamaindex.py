"""embtune_llamaindex: BaseEmbedding contract, a real VectorStoreIndex on SciFact, nodes → pairs,
the EmbeddingQAFinetuneDataset JSON (llama-index-core 0.14 no longer ships that class; the file
below is what llama-index-finetuning's ``save_json`` writes) and the retriever evaluator (against
LlamaIndex's own RetrieverEvaluator)."""
from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

pytest.importorskip("llama_index.core")

from integration_data import INSTRUCTED, TASK  # noqa: E402
from llama_index.core import Document, Settings, VectorStoreIndex  # noqa: E402
from llama_index.core.base.embeddings.base import BaseEmbedding  # noqa: E402
from llama_index.core.evaluation import RetrieverEvaluator  # noqa: E402
from llama_index.core.node_parser import MarkdownNodeParser  # noqa: E402

import embtune_llamaindex  # noqa: E402
from embtune.errors import DataFormatError  # noqa: E402
from embtune.eval import evaluate_retrieval  # noqa: E402
from embtune.models.architectures import DEFAULT_QUERY_TASK, instruction_prompt  # noqa: E402
from embtune.models.inference import truncate_normalize  # noqa: E402
from embtune_llamaindex import (EmbtuneEmbedding, QADataset, corpus_to_nodes, evaluate_retriever,  # noqa: E402
                                nodes_to_chunks, pairs_from_nodes, read_qa_dataset, training_data,
                                write_qa_dataset)

EXPECTED_ALL = ["EmbtuneEmbedding", "EmbtuneRerank", "QADataset", "corpus_to_nodes", "evaluate_retriever",
                "node_id", "nodes_to_chunks", "pairs_from_nodes", "read_qa_dataset", "training_data",
                "write_qa_dataset"]


def test_all_exports_and_class():
    assert sorted(embtune_llamaindex.__all__) == sorted(EXPECTED_ALL)
    assert BaseEmbedding in EmbtuneEmbedding.__mro__
    assert EmbtuneEmbedding.class_name() == "EmbtuneEmbedding"


def test_query_and_text_prompts_batches_and_async(tiny_st):
    emb = EmbtuneEmbedding(tiny_st, embed_batch_size=2)
    texts = ["Vitamin D and bone density", "Statins lower cholesterol", "p53 mutations in tumours",
             "Aspirin and stroke", "Sleep and memory"]
    query = np.array(emb.get_query_embedding(texts[0]))
    np.testing.assert_allclose(query, tiny_st.encode_query(texts[0], normalize_embeddings=True), atol=1e-5)
    batch = np.array(emb.get_text_embedding_batch(texts))
    assert batch.shape == (5, 64)
    np.testing.assert_allclose(batch, tiny_st.encode_document(texts, normalize_embeddings=True), atol=1e-5)
    np.testing.assert_allclose(emb.get_text_embedding(texts[0]), batch[0], atol=1e-5)
    assert np.abs(query - batch[0]).max() > 1e-3  # query and document prompts differ
    aquery = asyncio.run(emb.aget_query_embedding(texts[0]))
    abatch = asyncio.run(emb.aget_text_embedding_batch(texts))
    np.testing.assert_allclose(aquery, query, atol=1e-6)
    np.testing.assert_allclose(abatch, batch, atol=1e-6)
    plain = EmbtuneEmbedding(tiny_st, query_prompt="", truncate_dim=32)
    vec = plain.get_query_embedding(texts[0])
    assert len(vec) == 32 and np.linalg.norm(vec) == pytest.approx(1.0, rel=1e-5)


def test_query_prompt_is_the_models_own_or_the_one_given(tiny_st):
    text = "Vitamin D deficiency and bone density"
    for kwargs, prompt in (({}, "query: "), ({"query_prompt": "search_query: "}, "search_query: "),
                           ({"query_prompt": ""}, ""), ({"instruction": TASK}, INSTRUCTED)):
        emb = EmbtuneEmbedding(tiny_st, **kwargs)
        expected = tiny_st.encode(text, prompt=prompt, normalize_embeddings=True)
        np.testing.assert_allclose(emb.get_query_embedding(text), expected, atol=1e-5, err_msg=str(kwargs))
    emb = EmbtuneEmbedding(tiny_st, instruction=TASK, document_prompt="doc: ")
    assert emb.effective_query_prompt == INSTRUCTED
    np.testing.assert_allclose(emb.get_text_embedding(text),
                               tiny_st.encode(text, prompt="doc: ", normalize_embeddings=True), atol=1e-5)
    with pytest.raises(ValueError, match="not both"):
        EmbtuneEmbedding(tiny_st, query_prompt="q: ", instruction=TASK)
    with pytest.raises(ValueError):
        EmbtuneEmbedding(tiny_st, instruction="")


def test_instruction_reaches_a_vector_store_index(tiny_st, small_task):
    """A VectorStoreIndex retriever's scores = cosine of ST's encode with the instruction (query) and
    the model's "passage: " prompt (node texts)."""
    corpus = dict(list(small_task.corpus.items())[:6])
    query = next(iter(small_task.queries.values()))
    index = VectorStoreIndex(corpus_to_nodes(corpus), embed_model=EmbtuneEmbedding(tiny_st, instruction=TASK))
    hits = index.as_retriever(similarity_top_k=len(corpus)).retrieve(query)
    q = tiny_st.encode(query, prompt=INSTRUCTED, normalize_embeddings=True)
    d = tiny_st.encode(list(corpus.values()), prompt="passage: ", normalize_embeddings=True)
    expected = {doc_id: float(d[i] @ q) for i, doc_id in enumerate(corpus)}
    assert {hit.node.node_id: hit.score for hit in hits} == pytest.approx(expected, abs=1e-5)
    plain = tiny_st.encode(query, prompt="query: ", normalize_embeddings=True)
    assert float(np.abs(d @ plain - d @ q).max()) > 1e-3  # the instruction changed the scores


def test_decoder_gets_its_default_instruction(tiny_decoder_folder):
    """A plain decoder folder loads with embtune's default instruction as its query prompt (vectors of
    a bf16 model are normalised in float32, as EmbtuneEmbedding does)."""
    text = "Vitamin D deficiency and bone density"
    emb = EmbtuneEmbedding(tiny_decoder_folder, device="cpu")
    default = instruction_prompt(DEFAULT_QUERY_TASK)
    assert emb.client.prompts["query"] == default
    expected = truncate_normalize(emb.client.encode([text], prompt=default))[0]
    np.testing.assert_allclose(emb.get_query_embedding(text), expected, atol=1e-6)
    instructed = EmbtuneEmbedding(emb.client, instruction=TASK)
    expected = truncate_normalize(emb.client.encode([text], prompt=INSTRUCTED))[0]
    np.testing.assert_allclose(instructed.get_query_embedding(text), expected, atol=1e-6)


def test_vector_store_index_retrieves_and_metrics_agree(minilm, small_task):
    Settings.llm = None  # retrieval only, no LLM anywhere
    index = VectorStoreIndex(corpus_to_nodes(small_task.corpus, small_task.titles),
                             embed_model=EmbtuneEmbedding(minilm))
    retriever = index.as_retriever(similarity_top_k=5)
    qid, relevant = next(iter(small_task.qrels.items()))
    assert retriever.retrieve(small_task.queries[qid])[0].node.node_id in relevant

    ours = evaluate_retriever(retriever, small_task.queries, small_task.qrels, ks=(1, 5))
    reference = evaluate_retrieval(minilm, small_task.corpus, small_task.queries, small_task.qrels, ks=(1, 5),
                                   show_progress=False)
    for key in ("hit_rate@1", "hit_rate@5", "recall@5", "mrr@5", "ndcg@5"):
        assert ours[key] == pytest.approx(reference[key], abs=1e-6), key
    assert ours["hit_rate@5"] >= 0.75

    dataset = QADataset.from_beir(small_task.corpus, small_task.queries, small_task.qrels)
    assert evaluate_retriever(retriever, dataset, ks=(1, 5)) == ours
    theirs = RetrieverEvaluator.from_metric_names(["hit_rate", "mrr"], retriever=retriever)
    results = [asyncio.run(theirs.aevaluate(dataset.queries[q], expected_ids=docs))
               for q, docs in dataset.relevant_docs.items()]
    for name, key in (("hit_rate", "hit_rate@5"), ("mrr", "mrr@5")):
        mean = sum(r.metric_vals_dict[name] for r in results) / len(results)
        assert mean == pytest.approx(ours[key], abs=1e-6), name


# What llama-index-finetuning's EmbeddingQAFinetuneDataset.save_json writes:
# json.dump(model_dump(), indent=4).
LLAMAINDEX_FILE = """{
    "queries": {
        "7b1e": "What lowers \\u00b5-opioid tolerance?",
        "9c2a": "Which cells make insulin?"
    },
    "corpus": {
        "node-1": "Beta cells of the pancreas secrete insulin.",
        "node-2": "Ketamine reduces opioid tolerance in rats.",
        "node-3": "Unrelated chunk."
    },
    "relevant_docs": {
        "7b1e": [
            "node-2"
        ],
        "9c2a": [
            "node-1"
        ]
    },
    "mode": "text"
}"""


def test_qa_dataset_json_both_ways(tmp_path):
    (tmp_path / "theirs.json").write_text(LLAMAINDEX_FILE)
    dataset = read_qa_dataset(tmp_path / "theirs.json")
    assert dataset.queries["7b1e"] == "What lowers \u00b5-opioid tolerance?"
    assert dataset.relevant_docs == {"7b1e": ["node-2"], "9c2a": ["node-1"]} and dataset.mode == "text"
    path = write_qa_dataset(dataset, tmp_path / "ours.json")
    assert json.loads(path.read_text()) == json.loads(LLAMAINDEX_FILE)
    assert read_qa_dataset(path) == dataset

    corpus, queries, qrels = dataset.to_beir()
    assert qrels == {"7b1e": {"node-2": 1}, "9c2a": {"node-1": 1}} and len(corpus) == 3
    assert QADataset.from_beir(corpus, queries, qrels) == dataset
    pairs = dataset.to_pairs()
    assert [(p.query, p.positive_id, p.builder) for p in pairs] == [
        (queries["7b1e"], "node-2", "llamaindex-qa"), (queries["9c2a"], "node-1", "llamaindex-qa")]
    assert dataset.to_training_data().rows[1] == {"anchor": "Which cells make insulin?",
                                                  "positive": "Beta cells of the pancreas secrete insulin."}
    again = QADataset.from_pairs(pairs)
    assert again.relevant_docs == {"q0": ["node-2"], "q1": ["node-1"]}
    assert set(again.corpus) == {"node-1", "node-2"}


@pytest.mark.parametrize("content, message", [
    ('{"queries": {}, "corpus": {}}', "missing key"),
    ('{"queries": {"a": "q"}, "corpus": {"d": "t"}, "relevant_docs": {"a": ["zz"]}}',
     "'zz', which is not in"),
    ('{"queries": {"a": 1}, "corpus": {}, "relevant_docs": {}}', 'must be a string'),
    ('{"queries": ', "not valid JSON"),
])
def test_qa_dataset_errors_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DataFormatError, match=message) as err:
        read_qa_dataset(path)
    assert str(path) in str(err.value)


def test_pairs_from_nodes(small_task):
    text = "# Guide\n\nIntro words here.\n\n## Install\n\n" + "Install the package with pip and run it. " * 4
    nodes = MarkdownNodeParser().get_nodes_from_documents([Document(text=text, id_="guide.md")])
    nodes += corpus_to_nodes(dict(list(small_task.corpus.items())[:4]), small_task.titles)
    chunks = nodes_to_chunks(nodes)
    install = next(c for c in chunks if "pip" in c.text)
    # LlamaIndex's header_path holds the parents only ("/Guide/"); the section's own heading completes it,
    # as in the LangChain twin
    assert next(n for n in nodes if "pip" in n.text).metadata["header_path"] == "/Guide/"
    assert install.headings == ["Guide", "Install"] and install.doc_id == "guide.md"
    intro = next(c for c in chunks if "Intro" in c.text)
    assert intro.headings == ["Guide"]
    assert next(c for c in chunks if c.id == nodes[-1].node_id).headings == []  # a plain node: no heading
    assert [c.id for c in chunks] == [n.node_id for n in nodes]
    pairs = pairs_from_nodes(nodes)
    assert {p.positive_id for p in pairs} <= {n.node_id for n in nodes}
    assert {p.builder for p in pairs} == {"heuristic:title"}  # the default signal
    assert len(training_data(pairs)) == len(pairs)
    saved = QADataset.from_pairs(pairs)
    assert json.loads(json.dumps(saved.to_dict()))["mode"] == "text"
