"""Numeric tests of embtune.losses against their sentence-transformers counterparts.

Every comparison runs our loss and the ST loss on the same tiny model (see conftest.py) and the same
tokenized inputs, then checks that the loss values and every parameter gradient agree to fp32
tolerance. Gradients are also checked to be non-trivial, so a comparison of two zero gradients
cannot pass by accident.
"""
from __future__ import annotations

import math
import warnings

import pytest
import torch
from sentence_transformers.sentence_transformer import losses as st_losses
from tiny_models import torch_threads

from embtune.errors import ConfigError
from embtune.losses import (
    LOSS_NAMES,
    CachedInfoNCELoss,
    CoSENTLoss,
    CosineMSELoss,
    InfoNCELoss,
    MatryoshkaLoss,
    TripletLoss,
    get_loss,
    infonce_from_embeddings,
)

RTOL, ATOL = 1e-5, 1e-6

TEXTS = [
    "The cat sat on the mat.",
    "A dog barked at the mailman all morning long.",
    "Quantum computers use qubits.",
    "Paris is the capital of France.",
    "Photosynthesis turns light into chemical energy in plants.",
    "He drove to work.",
    "The stock market fell sharply after the announcement of new tariffs.",
    "Bake the bread at 220 degrees for thirty minutes.",
    "Mitochondria are the powerhouse of the cell.",
    "She plays the violin.",
    "Rain is expected tomorrow afternoon.",
    "The committee postponed its decision until the next quarterly meeting in October.",
    "Python is a programming language.",
    "Whales are mammals that live in the ocean.",
    "The bridge was closed for repairs.",
    "Vaccines train the immune system to recognise pathogens.",
    "I lost my keys again.",
    "Mount Everest is the highest mountain above sea level.",
    "The library opens at nine.",
    "Electric cars need charging stations along highways.",
    "Coffee contains caffeine.",
    "The orchestra tuned up before the concert began.",
    "Glaciers are retreating in many regions.",
    "Chess is a game of strategy.",
    "The satellite transmitted images of the storm.",
    "Tomatoes are botanically fruits.",
    "Our flight was delayed by two hours because of fog.",
    "The museum exhibits ancient pottery.",
    "Antibiotics do not work against viruses.",
    "He repaired the old bicycle himself.",
    "Solar panels convert sunlight to electricity.",
    "The novel has an unexpected ending.",
]
B = 8  # rows per column
MINI = 3  # GradCache mini-batch size: smaller than B and not a divisor of it
DIMS, WEIGHTS = [8, 32, 16], [0.25, 1.0, 0.5]  # Matryoshka dims (embedding size 32), deliberately unsorted


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Run this module on one intra-op thread: the matrices are tiny, and on a shared 2-core machine
    two threads per process oversubscribe the CPU and make these tests about ten times slower."""
    with torch_threads(1):
        yield


def columns(n_columns: int, rows: int = B) -> list[list[str]]:
    """``n_columns`` disjoint columns of ``rows`` texts each."""
    assert n_columns * rows <= len(TEXTS)
    return [TEXTS[i * rows : (i + 1) * rows] for i in range(n_columns)]


def run(loss_fn, model, cols: list[list[str]], labels: torch.Tensor | None = None):
    """Zero the grads, run ``loss_fn`` on freshly tokenized ``cols`` and back-propagate.

    Returns ``(loss value, {parameter name: gradient})``.
    """
    model.zero_grad(set_to_none=True)
    features = [model.preprocess(texts) for texts in cols]  # fresh dicts: the model writes into them
    loss = loss_fn(features, labels)
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def assert_same(ours, theirs, float64: bool = False) -> None:
    """Equal loss values and equal, non-trivial gradients for the same parameters.

    fp32: elementwise ``rtol=1e-5`` with ``atol=max(1e-6, 1e-5 * max|reference grad|)`` per tensor.
    The atol is scaled because shared parameters (e.g. the token-type embedding) get gradients that
    are sums over every token of the batch, whose rounding error follows the size of the summands, not
    of each (possibly cancelling) entry. float64: ``rtol=1e-9, atol=1e-12``, which leaves no room for
    anything but rounding (see test_infonce_family_matches_st_in_float64).
    """
    (loss_a, grads_a), (loss_b, grads_b) = ours, theirs
    rtol, atol = (1e-9, 1e-12) if float64 else (RTOL, ATOL)
    assert torch.isfinite(loss_a)
    torch.testing.assert_close(loss_a, loss_b, rtol=rtol, atol=atol)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 10
    largest = max(g.abs().max().item() for g in grads_b.values())
    assert largest > 1e-3, f"gradients too small to compare meaningfully ({largest})"
    for name, reference in grads_b.items():
        tensor_atol = max(atol, rtol * reference.abs().max().item())
        torch.testing.assert_close(grads_a[name], reference, rtol=rtol, atol=tensor_atol,
                                   msg=lambda detail, name=name: f"{name}: {detail}")


def st_mnrl(model, symmetric: bool, cached: bool = False):
    """The ST InfoNCE counterpart (symmetric: query_to_doc + doc_to_query, partition_mode per_direction)."""
    kwargs = {}
    if symmetric:
        kwargs = {"directions": ("query_to_doc", "doc_to_query"), "partition_mode": "per_direction"}
    if cached:
        return st_losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=MINI, **kwargs)
    return st_losses.MultipleNegativesRankingLoss(model, **kwargs)


# ----------------------------------------------------------------------------- pure function


def test_infonce_function_matches_explicit_cross_entropy():
    """infonce_from_embeddings equals a hand-built logits/cross-entropy, and row chunks add up."""
    gen = torch.Generator().manual_seed(0)
    anchors, candidates = torch.randn(5, 7, generator=gen), torch.randn(15, 7, generator=gen)
    cos = torch.nn.functional.cosine_similarity(anchors[:, None], candidates[None], dim=-1) * 10
    forward = torch.nn.functional.cross_entropy(cos, torch.arange(5))
    backward = torch.nn.functional.cross_entropy(cos[:, :5].T, torch.arange(5))
    torch.testing.assert_close(infonce_from_embeddings(anchors, candidates, 10.0), forward)
    torch.testing.assert_close(infonce_from_embeddings(anchors, candidates, 10.0, symmetric=True),
                               (forward + backward) / 2)
    for symmetric in (False, True):
        chunks = sum(infonce_from_embeddings(anchors, candidates, 10.0, symmetric, rows=(b, min(b + 2, 5)))
                     for b in range(0, 5, 2))
        torch.testing.assert_close(chunks, infonce_from_embeddings(anchors, candidates, 10.0, symmetric))


# ----------------------------------------------------------------------------- InfoNCE family


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("n_negatives", [0, 2])
def test_infonce_matches_st(tiny_st_factory, symmetric, n_negatives):
    """InfoNCELoss == ST MultipleNegativesRankingLoss (symmetric: directions q->d + d->q, per_direction)."""
    model = tiny_st_factory()
    cols = columns(2 + n_negatives)
    assert_same(run(InfoNCELoss(model, symmetric=symmetric), model, cols),
                run(st_mnrl(model, symmetric), model, cols))


def test_infonce_symmetric_matches_deprecated_st_class(tiny_st_factory):
    """The deprecated ST MultipleNegativesSymmetricRankingLoss computes the same, hard negatives included."""
    model = tiny_st_factory()
    cols = columns(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        st_loss = st_losses.MultipleNegativesSymmetricRankingLoss(model)
    assert_same(run(InfoNCELoss(model, symmetric=True), model, cols), run(st_loss, model, cols))


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("n_negatives", [0, 2])
def test_cached_infonce_matches_infonce_and_st(tiny_st_factory, symmetric, n_negatives):
    """GradCache (mini-batch 3 < batch 8) gives InfoNCELoss's loss and gradients, and ST's cached ones."""
    model = tiny_st_factory()
    cols = columns(2 + n_negatives)
    ours = run(CachedInfoNCELoss(model, mini_batch_size=MINI, symmetric=symmetric), model, cols)
    assert_same(ours, run(InfoNCELoss(model, symmetric=symmetric), model, cols))
    assert_same(ours, run(st_mnrl(model, symmetric, cached=True), model, cols))


def test_infonce_family_matches_st_in_float64(tiny_st_factory):
    """In float64 the InfoNCE family agrees with ST to 1e-9: the fp32 differences are rounding only."""
    model = tiny_st_factory().double()
    cols = columns(4)
    assert_same(run(InfoNCELoss(model, symmetric=True), model, cols),
                run(st_mnrl(model, symmetric=True), model, cols), float64=True)
    assert_same(run(CachedInfoNCELoss(model, mini_batch_size=MINI, symmetric=True), model, cols),
                run(st_mnrl(model, symmetric=True, cached=True), model, cols), float64=True)
    ours = MatryoshkaLoss(model, CachedInfoNCELoss(model, mini_batch_size=MINI), DIMS, WEIGHTS)
    theirs = st_losses.MatryoshkaLoss(model, st_mnrl(model, symmetric=False, cached=True), DIMS, WEIGHTS)
    assert_same(run(ours, model, cols), run(theirs, model, cols), float64=True)


def test_cached_infonce_replays_dropout(tiny_st_factory):
    """With dropout on, the replay reuses step 1's RNG: same loss and gradients as ST's cached loss
    from the same seed. Without the RNG replay the re-embedded mini-batches would draw other masks."""
    model = tiny_st_factory(dropout=0.1)
    cols = columns(3)
    torch.manual_seed(123)
    ours = run(CachedInfoNCELoss(model, mini_batch_size=MINI), model, cols)
    torch.manual_seed(123)
    theirs = run(st_mnrl(model, symmetric=False, cached=True), model, cols)
    assert_same(ours, theirs)
    torch.manual_seed(124)  # a different seed gives different dropout masks, so this test can fail
    other = run(CachedInfoNCELoss(model, mini_batch_size=MINI), model, cols)
    assert not torch.allclose(other[0], ours[0], rtol=RTOL, atol=ATOL)


def test_cached_infonce_scales_by_upstream_gradient(tiny_st_factory):
    """The replay multiplies the cached gradients by the gradient reaching the loss, e.g. the 1/N of
    gradient accumulation: backward of loss * 0.25 gives a quarter of the plain gradients."""
    model = tiny_st_factory()
    cols = columns(2)
    cached = CachedInfoNCELoss(model, mini_batch_size=MINI)
    plain = InfoNCELoss(model)
    loss, grads = run(lambda features, labels: cached(features, labels) * 0.25, model, cols)
    plain_loss, plain_grads = run(plain, model, cols)
    assert_same((loss * 4, {name: grad * 4 for name, grad in grads.items()}), (plain_loss, plain_grads))


def test_cached_infonce_embeds_at_most_mini_batch_rows(tiny_st_factory):
    """Every encoder forward (steps 1 and 3) sees at most mini_batch_size rows; this bounds memory."""
    model = tiny_st_factory()
    seen: list[int] = []
    handle = model[0].register_forward_pre_hook(
        lambda module, args: seen.append(args[0]["input_ids"].shape[0])
    )
    try:
        run(CachedInfoNCELoss(model, mini_batch_size=MINI), model, columns(3))
    finally:
        handle.remove()
    assert max(seen) == MINI
    assert sum(seen) == 2 * 3 * B  # every row embedded twice: no-grad pass, then replay


def test_cached_infonce_without_grad_returns_plain_loss(tiny_st_factory):
    """In evaluation (no autograd) the cached loss is the InfoNCE value and nothing is replayed."""
    model = tiny_st_factory()
    cols = columns(3)
    with torch.no_grad():
        cached = CachedInfoNCELoss(model, mini_batch_size=MINI)([model.preprocess(t) for t in cols], None)
        plain = InfoNCELoss(model)([model.preprocess(t) for t in cols], None)
    assert not cached.requires_grad
    torch.testing.assert_close(cached, plain, rtol=RTOL, atol=ATOL)


# ----------------------------------------------------------------------------- Matryoshka

@pytest.mark.parametrize("inner", ["infonce", "cached_infonce", "cosent", "triplet"])
def test_matryoshka_matches_st(tiny_st_factory, inner):
    """MatryoshkaLoss == ST MatryoshkaLoss at dims 32/16/8 with weights, for plain, cached and labelled
    losses; the euclidean triplet loss also checks that truncated embeddings are re-normalised."""
    model = tiny_st_factory()
    labels = None
    if inner == "infonce":
        cols = columns(3)
        ours_inner, st_inner = InfoNCELoss(model), st_losses.MultipleNegativesRankingLoss(model)
    elif inner == "cached_infonce":
        cols = columns(3)
        ours_inner = CachedInfoNCELoss(model, mini_batch_size=MINI)
        st_inner = st_losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=MINI)
    elif inner == "cosent":
        cols, labels = columns(2), torch.tensor([0.9, 0.1, 0.5, 0.5, 0.0, 1.0, 0.3, 0.7])
        ours_inner, st_inner = CoSENTLoss(model), st_losses.CoSENTLoss(model)
    else:
        cols, ours_inner, st_inner = columns(3), TripletLoss(model), st_losses.TripletLoss(model)
    ours = run(MatryoshkaLoss(model, ours_inner, DIMS, WEIGHTS), model, cols, labels)
    theirs = run(st_losses.MatryoshkaLoss(model, st_inner, DIMS, WEIGHTS), model, cols, labels)
    assert_same(ours, theirs)


def test_matryoshka_cached_equals_matryoshka_plain(tiny_st_factory):
    """Truncation inside the GradCache loss stage gives the same result as on the plain loss."""
    model = tiny_st_factory()
    cols = columns(3)
    cached_inner = CachedInfoNCELoss(model, mini_batch_size=MINI, symmetric=True)
    cached = MatryoshkaLoss(model, cached_inner, DIMS, WEIGHTS)
    plain = MatryoshkaLoss(model, InfoNCELoss(model, symmetric=True), DIMS, WEIGHTS)
    assert_same(run(cached, model, cols), run(plain, model, cols))


def test_matryoshka_weights_matter(tiny_st_factory):
    """The weighted sum is really weighted: one dim at weight 2 doubles that dim's loss."""
    model = tiny_st_factory()
    cols = columns(2)
    single = run(MatryoshkaLoss(model, InfoNCELoss(model), [16]), model, cols)[0]
    double = run(MatryoshkaLoss(model, InfoNCELoss(model), [16], [2.0]), model, cols)[0]
    full = run(InfoNCELoss(model), model, cols)[0]
    torch.testing.assert_close(double, 2 * single)
    assert not torch.allclose(single, full)


# ----------------------------------------------------------------------------- labelled pairs, triplets


def test_cosent_matches_st(tiny_st_factory):
    """CoSENTLoss == ST CoSENTLoss, with tied labels."""
    model = tiny_st_factory()
    cols, labels = columns(2), torch.tensor([0.9, 0.1, 0.5, 0.5, 0.0, 1.0, 0.3, 0.5])
    assert_same(run(CoSENTLoss(model), model, cols, labels),
                run(st_losses.CoSENTLoss(model), model, cols, labels))


def test_cosine_mse_matches_st(tiny_st_factory):
    """CosineMSELoss == ST CosineSimilarityLoss (MSE)."""
    model = tiny_st_factory()
    cols, labels = columns(2), torch.tensor([0.9, 0.1, 0.5, 0.5, 0.0, 1.0, 0.3, 0.7])
    assert_same(run(CosineMSELoss(model), model, cols, labels),
                run(st_losses.CosineSimilarityLoss(model), model, cols, labels))


@pytest.mark.parametrize(
    ("distance", "margin", "metric"),
    [("euclidean", 5.0, "EUCLIDEAN"), ("cosine", 0.05, "COSINE"), ("manhattan", 0.5, "MANHATTAN")],
)
def test_triplet_matches_st(tiny_st_factory, distance, margin, metric):
    """TripletLoss == ST TripletLoss for each distance (small margins leave some triplets inactive)."""
    model = tiny_st_factory()
    cols = columns(3)
    st_metric = getattr(st_losses.TripletDistanceMetric, metric)
    st_loss = st_losses.TripletLoss(model, st_metric, triplet_margin=margin)
    ours = TripletLoss(model, distance=distance, margin=margin)
    assert_same(run(ours, model, cols), run(st_loss, model, cols))


# ----------------------------------------------------------------------------- get_loss and errors


def test_get_loss_names_aliases_and_matryoshka(tiny_st_factory):
    """Every name builds the right class; aliases and options pass through; dims wrap in Matryoshka."""
    model = tiny_st_factory()
    expected = {"infonce": InfoNCELoss, "mnrl": InfoNCELoss, "infonce_symmetric": InfoNCELoss,
                "cached_infonce": CachedInfoNCELoss, "gradcache": CachedInfoNCELoss, "cosent": CoSENTLoss,
                "cosine_mse": CosineMSELoss, "triplet": TripletLoss}
    assert set(LOSS_NAMES) == set(expected)
    for name, cls in expected.items():
        loss = get_loss(name, model)
        assert type(loss) is cls and loss.needs_labels is (name in ("cosent", "cosine_mse"))
        assert isinstance(loss.get_config_dict(), dict)
    assert get_loss("infonce_symmetric", model).symmetric and not get_loss("MNRL", model).symmetric
    assert get_loss("gradcache", model, mini_batch_size=4, scale=30).get_config_dict()["mini_batch_size"] == 4
    wrapped = get_loss("cosent", model, matryoshka_dims=[16, 32])
    assert isinstance(wrapped, MatryoshkaLoss) and isinstance(wrapped.loss, CoSENTLoss)
    assert wrapped.matryoshka_dims == (32, 16) and wrapped.needs_labels


def test_get_loss_rejects_bad_configuration(tiny_st_factory):
    """Unknown names list the valid ones; foreign or contradictory options and bad values are ConfigErrors."""
    model = tiny_st_factory()
    with pytest.raises(ConfigError) as excinfo:
        get_loss("arcface", model)
    assert all(name in str(excinfo.value) for name in LOSS_NAMES)
    with pytest.raises(ConfigError, match="mini_batch_size"):
        get_loss("cosent", model, mini_batch_size=4)
    with pytest.raises(ConfigError, match="symmetric"):
        get_loss("infonce_symmetric", model, symmetric=False)
    with pytest.raises(ConfigError, match="64"):
        get_loss("infonce", model, matryoshka_dims=[64, 32])
    with pytest.raises(ConfigError):
        get_loss("triplet", model, distance="chebyshev")
    with pytest.raises(ConfigError):
        get_loss("infonce", model, scale=0)


def test_losses_reject_wrong_inputs(tiny_st_factory):
    """Too few columns and missing labels are reported as ConfigError, not as shape errors."""
    model = tiny_st_factory()
    one = [model.preprocess(TEXTS[:4])]
    two = [model.preprocess(TEXTS[:4]), model.preprocess(TEXTS[4:8])]
    with pytest.raises(ConfigError, match="at least 2"):
        InfoNCELoss(model)(one, None)
    with pytest.raises(ConfigError, match="at least 2"):
        CachedInfoNCELoss(model)(one, None)
    with pytest.raises(ConfigError, match="label"):
        CoSENTLoss(model)(two, None)
    with pytest.raises(ConfigError, match="exactly 3"):
        TripletLoss(model)(two, None)


# ----------------------------------------------------------------------------- inside the ST trainer


def test_trains_two_steps_in_sentence_transformers_trainer(tiny_st_factory, tmp_path):
    """Our cached Matryoshka InfoNCE runs unchanged in SentenceTransformerTrainer and moves the weights."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    model = tiny_st_factory()
    anchors, positives = columns(2)
    loss = MatryoshkaLoss(model, CachedInfoNCELoss(model, mini_batch_size=2), [32, 16])
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2,
        logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, dataloader_num_workers=0, seed=0,
    )
    dataset = Dataset.from_dict({"anchor": anchors, "positive": positives})
    weight = model[0].auto_model.encoder.layer[0].attention.self.query.weight
    before = weight.detach().clone()
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss)
    trainer.train()
    logged = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert trainer.state.global_step == 2 and len(logged) == 2
    assert all(math.isfinite(value) and value > 0 for value in logged)
    assert not torch.allclose(before, weight.detach())
