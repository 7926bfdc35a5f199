"""The released Llama-2 tokenizer, wrapped as the project's :class:`PromptTokenizer`.

Read from ``tokenizer.json`` directly (not through ``AutoTokenizer`` on the checkpoint
folder, whose ``config.json`` carries an ``auto_map`` that would ask to run the
release's own Python code). Ids the model relies on are checked: ``<s>`` = 1,
``</s>`` = 2, ``<PAD>`` = ``config.json``'s ``pad_token_id`` (32000), and 29871 = ``"▁"``,
which OpenVLA's ``predict_action`` appends after every prompt and the action head's
first input position reads.
"""

from __future__ import annotations

import json
from pathlib import Path

from cogvla.convert.errors import CheckpointFileError
from cogvla.tokenizer import PromptTokenizer

__all__ = ["SPACE_TOKEN_ID", "load_released_tokenizer"]

SPACE_TOKEN_ID = 29871
_DEFAULT_SPECIALS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<PAD>"}


def _special_tokens(directory: Path) -> dict[str, str]:
    specials = dict(_DEFAULT_SPECIALS)
    path = directory / "special_tokens_map.json"
    if path.is_file():
        for name, value in json.loads(path.read_text()).items():
            if name in specials:
                specials[name] = value["content"] if isinstance(value, dict) else value
    return specials


def load_released_tokenizer(
    directory: str | Path, *, pad_token_id: int, bos_token_id: int = 1, eos_token_id: int = 2
) -> PromptTokenizer:
    """The checkpoint's tokenizer, encoding ``prompt + [29871]`` without BOS (the model adds it)."""
    from transformers import PreTrainedTokenizerFast

    directory = Path(directory)
    path = directory / "tokenizer.json"
    if not path.is_file():
        hint = " (tokenizer.model alone would need sentencepiece, which the runtime does not use)"
        raise CheckpointFileError(
            f"{path}: missing; the Llama-2 fast tokenizer file is required"
            + (hint if (directory / "tokenizer.model").is_file() else "")
        )
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(path), **_special_tokens(directory))
    expected = {
        "bos_token_id": (tokenizer.bos_token_id, bos_token_id),
        "eos_token_id": (tokenizer.eos_token_id, eos_token_id),
        "pad_token_id": (tokenizer.pad_token_id, pad_token_id),
    }
    for name, (got, want) in expected.items():
        if got != want:
            raise CheckpointFileError(
                f"{path}: {name}: expected {want} (as the model was trained), got {got}"
            )
    space = tokenizer.convert_ids_to_tokens(SPACE_TOKEN_ID) if SPACE_TOKEN_ID < len(tokenizer) else None
    if space != "▁":
        raise CheckpointFileError(f"{path}: token {SPACE_TOKEN_ID}: expected '▁' (Llama-2), got {space!r}")
    return PromptTokenizer(tokenizer, suffix_ids=(SPACE_TOKEN_ID,))
