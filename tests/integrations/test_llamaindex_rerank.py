"""embtune_llamaindex.EmbtuneRerank: real TextNode / NodeWithScore / QueryBundle objects from a real
VectorStoreIndex retriever, the order and scores against `score_pairs`, and LlamaIndex's own
SentenceTransformerRerank on the same folder as the reference."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import VectorStoreIndex  # noqa: E402
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler  # noqa: E402
from llama_index.core.postprocessor import SentenceTransformerRerank  # noqa: E402
from llama_index.core.postprocessor.types import BaseNodePostprocessor  # noqa: E402
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode  # noqa: E402

from embtune.rerankers import score_pairs  # noqa: E402
from tiny_rerankers import RERANK_QUERY as QUERY, RERANK_TEXTS as TEXTS  # noqa: E402
from embtune_llamaindex import EmbtuneEmbedding, EmbtuneRerank  # noqa: E402

@pytest.fixture(scope="module")
def retrieved(tiny_st):
    """Six NodeWithScore from a real VectorStoreIndex retriever (nodes carry a ``source`` metadata key)."""
    nodes = [TextNode(text=t, id_=f"node-{i}", metadata={"source": f"paper {i}"})
             for i, t in enumerate(TEXTS)]
    index = VectorStoreIndex(nodes, embed_model=EmbtuneEmbedding(tiny_st))
    return index.as_retriever(similarity_top_k=6).retrieve(QUERY)


def _fresh(hits):
    """Copies of the retrieved NodeWithScore (postprocessors may write into them)."""
    return [NodeWithScore(node=h.node.model_copy(deep=True), score=h.score) for h in hits]


def _expected(crossencoder, hits, top_n):
    """(node ids, scores) best first, straight from score_pairs on the text LlamaIndex embeds."""
    texts = [h.node.get_content(metadata_mode=MetadataMode.EMBED) for h in hits]
    scores = score_pairs(crossencoder, [(QUERY, t) for t in texts])
    order = np.argsort(-scores, kind="stable")[:top_n]
    return [hits[i].node.node_id for i in order], [float(scores[i]) for i in order]


def test_is_an_exported_node_postprocessor():
    import embtune_llamaindex

    assert "EmbtuneRerank" in embtune_llamaindex.__all__
    assert issubclass(EmbtuneRerank, BaseNodePostprocessor)
    assert EmbtuneRerank.class_name() == "EmbtuneRerank"


def test_reranks_retrieved_nodes_by_the_crossencoder_scores(retrieved, tiny_reranker_folder, crossencoder):
    assert len(retrieved) == 6 and "paper" in retrieved[0].node.get_content(metadata_mode=MetadataMode.EMBED)
    rerank = EmbtuneRerank(model=tiny_reranker_folder, top_n=3, device="cpu")
    hits = _fresh(retrieved)
    got = rerank.postprocess_nodes(hits, QueryBundle(QUERY))
    want_ids, want_scores = _expected(crossencoder, hits, 3)
    assert [n.node.node_id for n in got] == want_ids
    assert [n.score for n in got] == pytest.approx(want_scores, abs=1e-5)
    assert all(isinstance(n, NodeWithScore) and isinstance(n.score, float) for n in got)
    assert [n.score for n in got] == sorted((n.score for n in got), reverse=True)
    assert [h.score for h in hits] == [h.score for h in retrieved]  # the input list keeps its scores
    assert want_ids != [h.node.node_id for h in retrieved[:3]]  # reranking changed something
    assert rerank.model == tiny_reranker_folder


def test_scores_the_text_with_embed_metadata(crossencoder):
    """Like SentenceTransformerRerank, metadata not excluded from embedding is part of the scored text."""
    node = TextNode(text=TEXTS[0], metadata={"source": "a long and distracting title about eye colour"})
    hidden = TextNode(text=TEXTS[0], metadata={"source": "a long and distracting title about eye colour"},
                      excluded_embed_metadata_keys=["source"])
    rerank = EmbtuneRerank(model=crossencoder, top_n=None)
    with_meta = rerank.postprocess_nodes([NodeWithScore(node=node)], query_str=QUERY)[0].score
    without = rerank.postprocess_nodes([NodeWithScore(node=hidden)], query_str=QUERY)[0].score
    embedded = node.get_content(metadata_mode=MetadataMode.EMBED)
    plain, full = score_pairs(crossencoder, [(QUERY, TEXTS[0]), (QUERY, embedded)])
    assert without == pytest.approx(float(plain), abs=1e-5)
    assert with_meta == pytest.approx(float(full), abs=1e-5)
    assert abs(with_meta - without) > 1e-4


def test_same_order_as_llamaindex_sentence_transformer_rerank(retrieved, tiny_reranker_folder):
    """LlamaIndex's own reranker on the same folder: same nodes, same order; its scores are the
    CrossEncoder's sigmoid probabilities of our logits."""
    ours = EmbtuneRerank(model=tiny_reranker_folder, top_n=4, device="cpu").postprocess_nodes(
        _fresh(retrieved), query_str=QUERY)
    theirs = SentenceTransformerRerank(model=tiny_reranker_folder, top_n=4, device="cpu").postprocess_nodes(
        _fresh(retrieved), query_str=QUERY)
    assert [n.node.node_id for n in ours] == [n.node.node_id for n in theirs]
    sigmoid = 1 / (1 + np.exp(-np.array([n.score for n in ours])))
    np.testing.assert_allclose(sigmoid, [float(n.score) for n in theirs], atol=1e-5)


def test_top_n_retrieval_score_async_and_events(retrieved, crossencoder):
    debug = LlamaDebugHandler()
    rerank = EmbtuneRerank(model=crossencoder, top_n=None, batch_size=2, keep_retrieval_score=True,
                           callback_manager=CallbackManager([debug]))
    hits = _fresh(retrieved)
    want_ids, want_scores = _expected(crossencoder, hits, None)  # before retrieval_score joins the metadata
    got = rerank.postprocess_nodes(hits, QueryBundle(QUERY))
    assert [n.node.node_id for n in got] == want_ids and len(got) == 6
    assert [n.score for n in got] == pytest.approx(want_scores, abs=1e-5)
    original = {h.node.node_id: h.score for h in retrieved}
    assert all(n.node.metadata["retrieval_score"] == original[n.node.node_id] for n in got)
    assert len(debug.get_event_pairs(CBEventType.RERANKING)) == 1
    two = EmbtuneRerank(model=crossencoder, top_n=2)
    again = asyncio.run(two.apostprocess_nodes(_fresh(retrieved), query_str=QUERY))
    assert [n.node.node_id for n in again] == want_ids[:2]
    more = EmbtuneRerank(model=crossencoder, top_n=10).postprocess_nodes(_fresh(retrieved), query_str=QUERY)
    assert [n.node.node_id for n in more] == want_ids
    assert two.postprocess_nodes([], query_str=QUERY) == []


def test_bad_arguments(crossencoder, tiny_st):
    with pytest.raises(ValueError, match="query bundle"):
        EmbtuneRerank(model=crossencoder).postprocess_nodes([NodeWithScore(node=TextNode(text="x"))])
    with pytest.raises(ValueError):
        EmbtuneRerank(model=crossencoder, top_n=0)
    with pytest.raises(TypeError, match="CrossEncoder"):
        EmbtuneRerank(model=tiny_st)  # an embedder is not a reranker
    rerank = EmbtuneRerank(model=crossencoder)
    assert rerank.top_n == 2 and rerank.client is crossencoder and rerank.model == "CrossEncoder"
