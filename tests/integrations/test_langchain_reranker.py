"""embtune_langchain.EmbtuneReranker: a real ContextualCompressionRetriever over a real vector store,
the order and scores against `score_pairs`, LangChain's own CrossEncoderReranker as the reference,
and LangChain's standard retriever tests on the reranking retriever."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")
pytest.importorskip("langchain_classic")

from langchain_classic.retrievers import ContextualCompressionRetriever  # noqa: E402
from langchain_classic.retrievers.document_compressors import CrossEncoderReranker  # noqa: E402
from langchain_core.documents import BaseDocumentCompressor, Document  # noqa: E402
from langchain_core.vectorstores import InMemoryVectorStore  # noqa: E402
from langchain_tests.integration_tests import RetrieversIntegrationTests  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from embtune.rerankers import score_pairs  # noqa: E402
from tiny_rerankers import RERANK_QUERY as QUERY, RERANK_TEXTS as TEXTS  # noqa: E402
from embtune_langchain import EmbtuneEmbeddings, EmbtuneReranker  # noqa: E402

@pytest.fixture(scope="module")
def store(tiny_st):
    docs = [Document(page_content=t, metadata={"n": i}, id=f"doc-{i}") for i, t in enumerate(TEXTS)]
    vector_store = InMemoryVectorStore(embedding=EmbtuneEmbeddings(model=tiny_st))
    vector_store.add_documents(docs)
    return vector_store


def _expected(crossencoder, docs, query, top_n):
    """(documents, scores) best first, straight from score_pairs: the order the reranker must give."""
    scores = score_pairs(crossencoder, [(query, d.page_content) for d in docs])
    order = np.argsort(-scores, kind="stable")[:top_n]
    return [docs[i] for i in order], [float(scores[i]) for i in order]


def test_is_a_document_compressor_exported_by_the_package():
    import embtune_langchain

    assert "EmbtuneReranker" in embtune_langchain.__all__
    assert issubclass(EmbtuneReranker, BaseDocumentCompressor)


def test_inside_contextual_compression_retriever(store, tiny_reranker_folder, crossencoder):
    base = store.as_retriever(search_kwargs={"k": 6})
    reranker = EmbtuneReranker(model=tiny_reranker_folder, top_n=3, device="cpu")
    retriever = ContextualCompressionRetriever(base_compressor=reranker, base_retriever=base)
    got = retriever.invoke(QUERY)
    candidates = base.invoke(QUERY)
    assert len(candidates) == 6
    want_docs, want_scores = _expected(crossencoder, candidates, QUERY, 3)
    assert [d.id for d in got] == [d.id for d in want_docs]
    assert [d.page_content for d in got] == [d.page_content for d in want_docs]
    assert [d.metadata["relevance_score"] for d in got] == pytest.approx(want_scores, abs=1e-5)
    assert [d.metadata["n"] for d in got] == [d.metadata["n"] for d in want_docs]  # metadata kept
    assert all(isinstance(d.metadata["relevance_score"], float) for d in got)
    scores = [d.metadata["relevance_score"] for d in got]
    assert scores == sorted(scores, reverse=True)
    # the reranked order is not just the retriever's order (else this test could not see a reranker)
    assert [d.id for d in got] != [d.id for d in candidates[:3]]


def test_same_documents_as_langchains_crossencoder_reranker(store, crossencoder):
    """LangChain's own CrossEncoderReranker over the same CrossEncoder keeps the same documents in the
    same order (it scores with sigmoid probabilities, a monotonic map of our logits)."""
    from langchain_core.cross_encoders import BaseCrossEncoder

    class _Wrapped(BaseCrossEncoder):
        def score(self, text_pairs):
            return crossencoder.predict(text_pairs).tolist()

    candidates = store.as_retriever(search_kwargs={"k": 8}).invoke(QUERY)
    ours = EmbtuneReranker(model=crossencoder, top_n=4).compress_documents(candidates, QUERY)
    theirs = CrossEncoderReranker(model=_Wrapped(), top_n=4).compress_documents(candidates, QUERY)
    assert [d.id for d in ours] == [d.id for d in theirs]


def test_originals_untouched_top_n_and_edge_cases(crossencoder):
    docs = [Document(page_content=t, metadata={"n": i}) for i, t in enumerate(TEXTS[:5])]
    everything = EmbtuneReranker(model=crossencoder, top_n=None).compress_documents(docs, QUERY)
    want_docs, want_scores = _expected(crossencoder, docs, QUERY, None)
    assert [d.page_content for d in everything] == [d.page_content for d in want_docs]
    assert [d.metadata["relevance_score"] for d in everything] == pytest.approx(want_scores, abs=1e-5)
    assert all("relevance_score" not in d.metadata for d in docs)  # copies, not the retriever's objects
    more = EmbtuneReranker(model=crossencoder, top_n=10).compress_documents(docs, QUERY)
    assert [d.page_content for d in more] == [d.page_content for d in want_docs]
    one = EmbtuneReranker(model=crossencoder, top_n=1, batch_size=2).compress_documents(docs, QUERY)
    assert [d.page_content for d in one] == [want_docs[0].page_content]
    assert EmbtuneReranker(model=crossencoder).compress_documents([], QUERY) == []


@pytest.mark.asyncio
async def test_async_retriever_matches_sync(store, crossencoder):
    retriever = ContextualCompressionRetriever(base_compressor=EmbtuneReranker(model=crossencoder, top_n=2),
                                               base_retriever=store.as_retriever(search_kwargs={"k": 5}))
    sync = retriever.invoke(QUERY)
    assert [d.id for d in await retriever.ainvoke(QUERY)] == [d.id for d in sync]


def test_bad_arguments(crossencoder, tiny_st):
    with pytest.raises(ValidationError):
        EmbtuneReranker(model=crossencoder, top_n=0)
    with pytest.raises(ValidationError):
        EmbtuneReranker(model=crossencoder, unknown=1)
    with pytest.raises(TypeError, match="CrossEncoder"):
        EmbtuneReranker(model=tiny_st)  # an embedder is not a reranker
    assert EmbtuneReranker(model=crossencoder).client is crossencoder


@pytest.mark.asyncio
@pytest.mark.filterwarnings("ignore:The test <Function test_")  # the suite mixes sync and async tests
class TestRerankingRetrieverStandard(RetrieversIntegrationTests):
    """LangChain's standard retriever tests on ContextualCompressionRetriever + EmbtuneReranker, where
    ``k`` is the reranker's ``top_n`` (constructor) or the vector store's ``k`` (invoke kwarg)."""

    params: dict = {}

    @pytest.fixture(autouse=True)
    def _params(self, store, crossencoder):
        type(self).params = {"store": store, "crossencoder": crossencoder}

    @property
    def retriever_constructor(self):
        def build(k: int = 3) -> ContextualCompressionRetriever:
            params = type(self).params
            return ContextualCompressionRetriever(
                base_compressor=EmbtuneReranker(model=params["crossencoder"], top_n=k),
                base_retriever=params["store"].as_retriever(search_kwargs={"k": 6}))
        return build

    @property
    def retriever_query_example(self) -> str:
        return QUERY
