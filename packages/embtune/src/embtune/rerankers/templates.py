"""The Qwen3-Reranker prompt, as a chat template sentence-transformers renders for a (query, document) pair.

sentence-transformers (6.x) turns a text pair into two messages with the roles ``query`` and
``document`` and the model's prompt into a ``system`` message, then renders them with the
tokenizer's chat template. A decoder reranker scores the logits of "yes" and "no" at the last
position (`sentence_transformers.cross_encoder.modules.LogitScore`), so the template must end where
the model is to answer. This template reproduces the Qwen3-Reranker model card's input exactly::

    <|im_start|>system
    Judge whether the Document meets the requirements based on the Query and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>
    <|im_start|>user
    <Instruct>: {instruction}
    <Query>: {query}
    <Document>: {document}<|im_end|>
    <|im_start|>assistant
    <think>

    </think>

    
The instruction is the model's prompt (its ``system`` message); without one the model card's
default instruction is used.
"""
from __future__ import annotations

SYSTEM = ('Judge whether the Document meets the requirements based on the Query and the Instruct provided. '
          'Note that the answer can only be "yes" or "no".')
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
ANSWER_PREFIX = "<think>\n\n</think>\n\n"


def _content(var: str) -> str:
    """Jinja expression for a message's text, whether ``content`` is a string or a list of text parts."""
    return (f"({var}.content if {var}.content is string else "
            f"({var}.content | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('')))")


QWEN3_RERANKER_TEMPLATE = (
    "{%- set ns = namespace(instruction='" + DEFAULT_INSTRUCTION + "', query='', document='') -%}"
    "{%- for m in messages -%}"
    "{%- if m.role == 'system' -%}{%- set ns.instruction = " + _content("m") + " -%}"
    "{%- elif m.role == 'query' -%}{%- set ns.query = " + _content("m") + " -%}"
    "{%- elif m.role == 'document' -%}{%- set ns.document = " + _content("m") + " -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "<|im_start|>system\n" + SYSTEM.replace("'", "\\'") + "<|im_end|>\n"
    "<|im_start|>user\n<Instruct>: {{ ns.instruction }}\n<Query>: {{ ns.query }}\n"
    "<Document>: {{ ns.document }}<|im_end|>\n<|im_start|>assistant\n"
    + ANSWER_PREFIX.replace("\n", "\\n").join(["{{ '", "' }}"])
)


def reference_prompt(query: str, document: str, instruction: str | None = None) -> str:
    """The Qwen3-Reranker model card's input text for one pair (what the template must render).

    In: query, document and the instruction (None: the default). Out: the full prompt string.
    """
    return ("<|im_start|>system\n" + SYSTEM + "<|im_end|>\n<|im_start|>user\n"
            f"<Instruct>: {instruction or DEFAULT_INSTRUCTION}\n<Query>: {query}\n<Document>: {document}"
            "<|im_end|>\n<|im_start|>assistant\n" + ANSWER_PREFIX)
