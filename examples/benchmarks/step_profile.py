"""How train_speed.py --profile groups one training step's profiler events (the ablation's profile rows)."""
from __future__ import annotations

PROFILE_GROUPS = (  # (group, substrings of op names), first match wins; the rest is "other"
    ("linear layers (mm/addmm)", ("aten::mm", "aten::addmm", "aten::bmm")),
    ("dropout masks", ("keep_mask", "bernoulli", "aten::where")),
    ("dtype casts (copy_)", ("aten::copy_",)),
    ("GELU, LayerNorm, residual adds", ("gelu", "layer_norm", "aten::add", "aten::mul")),
    ("pack/unpack (index_select/scatter)", ("index_select", "scatter", "aten::cat", "index_put", "index_copy")),
)
PROFILE_ROWS = (  # --profile: one MiniLM step of each, grouped (the ablation's "before" and "after")
    ("first step: padded, PEFT LoRA", {"packing": False, "lora": "peft", "dropout": "torch"}),
    ("bucketed SDPA (the earlier default)", {"attention": "bucket"}),
    ("matmul attention", {"attention": "matmul"}),
    ("default (attention auto)", {}),
)
ATTENTION_GROUP = "attention fwd+bwd (all its ops)"
ATTENTION_SCOPES = ("embtune::attention", "MatmulAttention", "scaled_dot_product", "ScaledDotProduct",
                    "_ToBuckets", "_FromBuckets")
"""An op whose own name or any caller's (the profiler's parent chain: the forward's ``embtune::attention``
scope, the backward's autograd node) contains one of these is counted as attention, whatever it is."""


def profile_groups(events) -> dict[str, float]:
    """Self CPU time (us) per group of one profiled step. In: ``prof.events()``. Out: {group: us}."""
    groups = dict.fromkeys([ATTENTION_GROUP] + [g for g, _ in PROFILE_GROUPS] + ["other"], 0.0)
    for event in events:
        if event.self_cpu_time_total <= 0:
            continue
        node, group = event, None
        while node is not None:
            if any(scope in node.name for scope in ATTENTION_SCOPES):
                group = ATTENTION_GROUP
                break
            node = node.cpu_parent
        group = group or next((g for g, keys in PROFILE_GROUPS if any(k in event.name for k in keys)), "other")
        groups[group] += event.self_cpu_time_total
    return groups


__all__ = ["ATTENTION_GROUP", "ATTENTION_SCOPES", "PROFILE_GROUPS", "PROFILE_ROWS", "profile_groups"]
