"""embtune_langchain: LangChain's standard embeddings tests, prompts, real vector stores on SciFact,
pairs from Documents and the retriever evaluator."""
from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.vectorstores import InMemoryVectorStore  # noqa: E402
from langchain_tests.integration_tests import EmbeddingsIntegrationTests  # noqa: E402
from langchain_tests.unit_tests import EmbeddingsUnitTests  # noqa: E402
from pydantic import ValidationError  # noqa: E402
from integration_data import INSTRUCTED, TASK  # noqa: E402
from tiny_models import tiny_backbone  # noqa: E402

import embtune_langchain  # noqa: E402
from embtune.errors import EmbtuneError  # noqa: E402
from embtune.eval import evaluate_retrieval  # noqa: E402
from embtune.models.architectures import DEFAULT_QUERY_TASK, instruction_prompt  # noqa: E402
from embtune.models.inference import truncate_normalize  # noqa: E402
from embtune_langchain import (EmbtuneEmbeddings, documents_to_chunks, evaluate_retriever,  # noqa: E402
                               pairs_from_documents, training_data)

EXPECTED_ALL = ["EmbtuneEmbeddings", "EmbtuneReranker", "document_id", "documents_to_chunks",
                "evaluate_retriever", "pairs_from_documents", "training_data"]


@pytest.fixture(scope="module")
def standard_model_folder(tmp_path_factory) -> str:
    return str(tiny_backbone(tmp_path_factory.mktemp("lc-std"), "bert"))


class _TinyParams:
    """The standard suites build the model from properties; the folder comes from a fixture."""

    folder: str = ""

    @pytest.fixture(autouse=True)
    def _folder(self, standard_model_folder):
        type(self).folder = standard_model_folder

    @property
    def embeddings_class(self) -> type[EmbtuneEmbeddings]:
        return EmbtuneEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"model": self.folder, "batch_size": 2, "device": "cpu"}


class TestEmbtuneEmbeddingsUnit(_TinyParams, EmbeddingsUnitTests):
    """LangChain's standard unit tests (init, init from env)."""


@pytest.mark.asyncio
@pytest.mark.filterwarnings("ignore:The test <Function test_")  # the suite mixes sync and async tests
class TestEmbtuneEmbeddingsIntegration(_TinyParams, EmbeddingsIntegrationTests):
    """LangChain's standard integration tests (sync and async), offline with a tiny model."""


def test_all_exports():
    assert sorted(embtune_langchain.__all__) == sorted(EXPECTED_ALL)


def test_prompts_are_applied_and_options_work(tiny_st):
    emb = EmbtuneEmbeddings(model=tiny_st)
    text = "Vitamin D deficiency and bone density"
    query = np.array(emb.embed_query(text))
    doc = np.array(emb.embed_documents([text])[0])
    np.testing.assert_allclose(query, tiny_st.encode_query(text, normalize_embeddings=True), atol=1e-5)
    np.testing.assert_allclose(doc, tiny_st.encode_document(text, normalize_embeddings=True), atol=1e-5)
    plain = tiny_st.encode(text, normalize_embeddings=True)
    assert np.abs(query - plain).max() > 1e-3 and np.abs(query - doc).max() > 1e-3  # prompts changed them
    no_prompt = EmbtuneEmbeddings(model=tiny_st, query_prompt="")
    np.testing.assert_allclose(no_prompt.embed_query(text), plain, atol=1e-5)
    short = EmbtuneEmbeddings(model=tiny_st, truncate_dim=16)
    vec = short.embed_query(text)
    assert len(vec) == 16 and math.isclose(float(np.linalg.norm(vec)), 1.0, rel_tol=1e-5)
    assert emb.embed_documents([]) == []
    with pytest.raises(ValidationError):
        EmbtuneEmbeddings(model=tiny_st, not_an_option=1)
    with pytest.raises(ValidationError):
        EmbtuneEmbeddings(model=tiny_st, batch_size=0)


def test_query_prompt_is_the_models_own_or_the_one_given(tiny_st):
    text = "Vitamin D deficiency and bone density"
    for kwargs, prompt in (({}, "query: "), ({"query_prompt": "search_query: "}, "search_query: "),
                           ({"query_prompt": ""}, ""), ({"instruction": TASK}, INSTRUCTED)):
        emb = EmbtuneEmbeddings(model=tiny_st, **kwargs)
        expected = tiny_st.encode(text, prompt=prompt, normalize_embeddings=True)
        np.testing.assert_allclose(emb.embed_query(text), expected, atol=1e-5, err_msg=str(kwargs))
    emb = EmbtuneEmbeddings(model=tiny_st, instruction=TASK, document_prompt="")
    assert emb.effective_query_prompt == INSTRUCTED
    plain = tiny_st.encode(text, normalize_embeddings=True)  # document_prompt="" drops "passage: "
    np.testing.assert_allclose(emb.embed_documents([text])[0], plain, atol=1e-5)
    with pytest.raises(ValidationError, match="not both"):
        EmbtuneEmbeddings(model=tiny_st, query_prompt="q: ", instruction=TASK)
    with pytest.raises(ValidationError):
        EmbtuneEmbeddings(model=tiny_st, instruction="")


def test_instruction_reaches_a_langchain_vector_store(tiny_st, small_task):
    """InMemoryVectorStore scores = cosine of ST's encode with the instruction (query) and the
    model's "passage: " prompt (documents)."""
    texts = list(small_task.corpus.values())[:6]
    query = next(iter(small_task.queries.values()))
    store = InMemoryVectorStore(embedding=EmbtuneEmbeddings(model=tiny_st, instruction=TASK))
    store.add_texts(texts, ids=[str(i) for i in range(len(texts))])
    hits = store.similarity_search_with_score(query, k=len(texts))
    q = tiny_st.encode(query, prompt=INSTRUCTED, normalize_embeddings=True)
    d = tiny_st.encode(texts, prompt="passage: ", normalize_embeddings=True)
    expected = {str(i): float(d[i] @ q) for i in range(len(texts))}
    assert {doc.id: score for doc, score in hits} == pytest.approx(expected, abs=1e-5)
    plain = tiny_st.encode(query, prompt="query: ", normalize_embeddings=True)
    assert float(np.abs(d @ plain - d @ q).max()) > 1e-3  # the instruction changed the scores


def test_decoder_gets_its_default_instruction(tiny_decoder_folder):
    """A plain decoder folder loads with embtune's default instruction as its query prompt. (The model
    may run in bf16: ST's vectors are normalised in float32 here, as EmbtuneEmbeddings does.)"""
    text = "Vitamin D deficiency and bone density"
    emb = EmbtuneEmbeddings(model=tiny_decoder_folder, device="cpu")
    st = emb.client
    default = instruction_prompt(DEFAULT_QUERY_TASK)
    assert st.prompts["query"] == default
    expected = truncate_normalize(st.encode([text], prompt=default))[0]
    np.testing.assert_allclose(emb.embed_query(text), expected, atol=1e-6)
    instructed = EmbtuneEmbeddings(model=st, instruction=TASK)
    np.testing.assert_allclose(instructed.embed_query(text),
                               truncate_normalize(st.encode([text], prompt=INSTRUCTED))[0], atol=1e-6)


def _documents(task) -> list[Document]:
    return [Document(id=doc_id, page_content=text, metadata={"title": task.titles[doc_id], "source": doc_id})
            for doc_id, text in task.corpus.items()]


def test_inmemory_vector_store_retrieves_the_right_abstract(minilm, small_task):
    emb = EmbtuneEmbeddings(model=minilm)
    store = InMemoryVectorStore.from_documents(_documents(small_task), embedding=emb)
    qid, relevant = next(iter(small_task.qrels.items()))
    hits = store.similarity_search(small_task.queries[qid], k=1)
    assert hits[0].id in relevant
    retriever = store.as_retriever(search_kwargs={"k": 10})
    metrics = evaluate_retriever(retriever, small_task.queries, small_task.qrels, ks=(1, 5, 10))
    reference = evaluate_retrieval(minilm, small_task.corpus, small_task.queries, small_task.qrels,
                                   ks=(1, 5, 10), show_progress=False)
    for key in ("hit_rate@1", "recall@5", "mrr@10", "ndcg@10", "map@10"):
        assert metrics[key] == pytest.approx(reference[key], abs=1e-6), key
    assert metrics["hit_rate@5"] >= 0.75


def test_community_faiss_store_retrieves_the_right_abstract(minilm, small_task):
    vectorstores = pytest.importorskip("langchain_community.vectorstores")
    from langchain_community.vectorstores.utils import DistanceStrategy

    emb = EmbtuneEmbeddings(model=minilm)
    store = vectorstores.FAISS.from_documents(_documents(small_task), emb,
                                              distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT)
    retriever = store.as_retriever(search_kwargs={"k": 5})
    by_id = evaluate_retriever(retriever, small_task.queries, small_task.qrels, ks=(1, 5))
    by_source = evaluate_retriever(retriever, small_task.queries, small_task.qrels, ks=(1, 5),
                                   id_key="source")
    assert by_id == by_source
    assert by_id["hit_rate@5"] >= 0.75 and by_id["num_queries"] == len(small_task.qrels)


def test_evaluate_retriever_needs_ids(tiny_st, small_task):
    store = InMemoryVectorStore(embedding=EmbtuneEmbeddings(model=tiny_st))
    store.add_texts(list(small_task.corpus.values())[:3])  # no metadata: nothing maps to a doc id
    with pytest.raises(EmbtuneError, match="no metadata"):
        evaluate_retriever(store.as_retriever(), small_task.queries, small_task.qrels, id_key="doc")


def test_pairs_from_documents_use_the_corpus_builders(small_task):
    docs = _documents(small_task)[:6]
    docs.append(Document(page_content="Install the package with pip and run the demo. " * 3,
                         metadata={"Header 1": "Guide", "Header 2": "Install", "source": "guide.md"}))
    chunks = documents_to_chunks(docs)
    assert [c.id for c in chunks[:6]] == [d.id for d in docs[:6]]
    assert chunks[-1].headings == ["Guide", "Install"] and chunks[-1].doc_id == "guide.md"
    assert len(chunks[-1].id) == 16  # no Document.id: the chunker's stable hash
    pairs = pairs_from_documents(docs)
    title_pairs = [p for p in pairs if p.builder == "heuristic:title"]
    assert {p.positive_id for p in title_pairs} >= {d.id for d in docs[:6] if len(d.metadata["title"]) > 3}
    assert any(p.query == "Guide > Install" for p in title_pairs)
    assert {p.builder for p in pairs} == {"heuristic:title"}  # the default signal
    data = training_data(pairs)
    assert data.columns == ["anchor", "positive"] and len(data) == len(pairs)
    with pytest.raises(ValueError, match="appears twice"):
        documents_to_chunks([docs[0], docs[0]])
