"""Row shapes that trainers load as they are: pure functions, no I/O.

* SFT (TRL / axolotl ``chat_template``): ``{"messages": [...], ...metadata}`` with an optional
  ``text`` rendered in ChatML exactly as a ChatML chat template renders the same messages.
* DPO, TRL style: ``{"prompt": [messages], "chosen": [assistant], "rejected": [assistant]}``.
* LLaMA-Factory ``sharegpt``: ``conversations`` of ``{"from", "value"}`` (``human``/``gpt``),
  a ``system`` column, and for preferences ``chosen``/``rejected`` single messages; plus the
  ``dataset_info.json`` entry that registers the file.

Records that carry ``messages`` (``datakit converse``) export the whole conversation: every
assistant turn is a training target.

The user turn joins instruction and input one way everywhere: the instruction, and when the
input is not empty, a blank line and the input (``instruction + "\\n\\n" + input``), each with
surrounding whitespace stripped.
"""

from __future__ import annotations

from typing import Any

# Metadata keys TRL reads as data; never used for metadata.
_TRL_KEYS = {"prompt", "chosen", "rejected", "completion", "messages", "label", "text",
             "chat_template_kwargs", "conversations", "system"}


def user_content(instruction: str, input: str = "") -> str:
    """The user turn: instruction, then a blank line and the input when there is one."""
    instruction = (instruction or "").strip()
    input = (input or "").strip()
    return f"{instruction}\n\n{input}" if input else instruction


def prompt_messages(instruction: str, input: str = "", system: str | None = None) -> list[dict[str, str]]:
    msgs = []
    if system:
        msgs.append({"role": "system", "content": system})
    msgs.append({"role": "user", "content": user_content(instruction, input)})
    return msgs


def render_chatml(messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """ChatML: ``<|im_start|>role\\ncontent<|im_end|>\\n`` per message, nothing else."""
    out = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    if add_generation_prompt:
        out += "<|im_start|>assistant\n"
    return out


def _meta(meta: dict[str, Any] | None) -> dict[str, Any]:
    meta = dict(meta or {})
    bad = _TRL_KEYS & meta.keys()
    if bad:
        raise ValueError(f"metadata keys clash with data keys: {sorted(bad)}")
    return meta


def sft_row(instruction: str, input: str, output: str, *, system: str | None = None,
            with_text: bool = False, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    messages = prompt_messages(instruction, input, system) + [{"role": "assistant", "content": output}]
    row: dict[str, Any] = {"messages": messages}
    if with_text:
        row["text"] = render_chatml(messages)
    row.update(_meta(meta))
    return row


def dpo_row_trl(instruction: str, input: str, chosen: str, rejected: str, *, system: str | None = None,
                meta: dict[str, Any] | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "prompt": prompt_messages(instruction, input, system),
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }
    row.update(_meta(meta))
    return row


def sft_row_sharegpt(instruction: str, input: str, output: str, *, system: str | None = None,
                     meta: dict[str, Any] | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "conversations": [{"from": "human", "value": user_content(instruction, input)},
                          {"from": "gpt", "value": output}],
        "system": system or "",
    }
    row.update(_meta(meta))
    return row


def dpo_row_sharegpt(instruction: str, input: str, chosen: str, rejected: str, *,
                     system: str | None = None, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "conversations": [{"from": "human", "value": user_content(instruction, input)}],
        "chosen": {"from": "gpt", "value": chosen},
        "rejected": {"from": "gpt", "value": rejected},
        "system": system or "",
    }
    row.update(_meta(meta))
    return row


def conversation_messages(messages: list[dict[str, str]], system: str | None = None) -> list[dict[str, str]]:
    """A record's ``messages`` for SFT: ``system`` opens it unless it has a system message."""
    msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
    if system and (not msgs or msgs[0]["role"] != "system"):
        msgs.insert(0, {"role": "system", "content": system})
    return msgs


def check_conversation(messages: Any) -> str | None:
    """Why ``messages`` is not a trainable conversation (None when it is): an optional system
    message, then user/assistant alternating, ending with an assistant turn."""
    if not isinstance(messages, list) or not messages:
        return "bad_messages"
    roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
    if any(not isinstance(m.get("content"), str) for m in messages if isinstance(m, dict)):
        return "bad_messages"
    body = roles[1:] if roles[0] == "system" else roles
    if not body or len(body) % 2 or any(r != ("user", "assistant")[i % 2] for i, r in enumerate(body)):
        return "bad_messages"
    return None


def sft_row_conversation(messages: list[dict[str, str]], *, with_text: bool = False,
                         meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """A multi-turn SFT row, TRL / axolotl style: the whole conversation as ``messages``."""
    row: dict[str, Any] = {"messages": messages}
    if with_text:
        row["text"] = render_chatml(messages)
    row.update(_meta(meta))
    return row


def sft_row_sharegpt_conversation(messages: list[dict[str, str]], *, meta: dict[str, Any] | None = None
                                  ) -> dict[str, Any]:
    """A multi-turn SFT row, LLaMA-Factory sharegpt style (human/gpt alternating, ``system``)."""
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    tags = {"user": "human", "assistant": "gpt"}
    row: dict[str, Any] = {"conversations": [{"from": tags[m["role"]], "value": m["content"]}
                                             for m in messages if m["role"] != "system"],
                           "system": system}
    row.update(_meta(meta))
    return row


SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human",
                 "assistant_tag": "gpt", "system_tag": "system"}


def llamafactory_entry(file_name: str, *, ranking: bool) -> dict[str, Any]:
    """The ``dataset_info.json`` value for one exported sharegpt file."""
    columns = {"messages": "conversations", "system": "system"}
    if ranking:
        columns.update({"chosen": "chosen", "rejected": "rejected"})
    entry: dict[str, Any] = {"file_name": file_name, "formatting": "sharegpt"}
    if ranking:
        entry["ranking"] = True
    entry["columns"] = columns
    entry["tags"] = dict(SHAREGPT_TAGS)
    return entry


def axolotl_snippet(train_path: str, eval_path: str | None = None) -> str:
    """The ``datasets:`` block of an axolotl config for an SFT export (messages format)."""
    def block(path: str) -> str:
        return (f"  - path: {path}\n"
                f"    ds_type: {'parquet' if path.endswith('.parquet') else 'json'}\n"
                f"    type: chat_template\n"
                f"    field_messages: messages\n"
                f"    message_property_mappings:\n"
                f"      role: role\n"
                f"      content: content\n"
                f"    roles_to_train: [\"assistant\"]\n")
    out = ("# axolotl: paste into your config (datakit export, SFT, ChatML messages)\n"
           "chat_template: tokenizer_default_fallback_chatml\n"
           "datasets:\n" + block(train_path))
    if eval_path:
        out += "test_datasets:\n" + block(eval_path).replace("    type:", "    split: train\n    type:", 1)
    else:
        out += "val_set_size: 0.0\n"
    return out
