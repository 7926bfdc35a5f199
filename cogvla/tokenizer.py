"""Prompt tokenization: the OpenVLA prompt template, left padding, and a small BPE for ``tiny``.

Real checkpoints bring their own tokenizer (Llama-2's, loaded with
``transformers.AutoTokenizer`` from the checkpoint's ``tokenizer/`` folder); OpenVLA
appends the id of ``"▁"`` (29871) after the prompt, which a converted checkpoint records
as ``suffix_ids`` in ``prompt_tokenizer.json``. Small models use a byte-level BPE
trained with ``tokenizers`` on the instruction set (all LIBERO suites by default).

Special ids of trained tokenizers follow Llama where it matters to the model:
``<pad>`` = 0, ``<s>`` (BOS) = 1, ``</s>`` (stop) = 2, ``<unk>`` = 3.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

__all__ = [
    "LIBERO_SUITES",
    "PROMPT_TEMPLATE",
    "SPECIAL_TOKENS",
    "PromptTokenizer",
    "format_prompt",
    "libero_instructions",
]

PROMPT_TEMPLATE = "In: What action should the robot take to {instruction}?\nOut:"
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
LIBERO_SUITES = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")
_SETTINGS_FILE = "prompt_tokenizer.json"


def format_prompt(instruction: str) -> str:
    """The OpenVLA prompt for a task instruction (lower-cased, as in the reference)."""
    return PROMPT_TEMPLATE.format(instruction=instruction.lower())


def libero_instructions(suites: Sequence[str] = LIBERO_SUITES) -> list[str]:
    """Sorted unique task instructions of the LIBERO suites, read from the installed ``libero`` package."""
    try:
        from libero.libero import benchmark
    except ImportError as exc:
        raise ImportError(
            "libero is not installed; pass the instruction strings to PromptTokenizer.train explicitly"
        ) from exc
    registry = benchmark.get_benchmark_dict()
    unknown = [name for name in suites if name not in registry]
    if unknown:
        raise ValueError(f"suites: expected names from {sorted(registry)}, got unknown {unknown}")
    instructions = set()
    for name in suites:
        # A benchmark prints its task order to stdout, where CLIs write their JSON results.
        with contextlib.redirect_stdout(sys.stderr):
            suite = registry[name]()
        instructions.update(suite.get_task(i).language for i in range(suite.n_tasks))
    return sorted(instructions)


class PromptTokenizer:
    """Turns task instructions into left-padded prompt ids for ``CogVLAModel``.

    Args:
        tokenizer: any ``transformers`` tokenizer; special tokens are never added (the model
            adds BOS and stop itself).
        suffix_ids: ids appended after every prompt (OpenVLA/Llama: ``(29871,)``).
        max_length: longest accepted prompt, in tokens.
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, *, suffix_ids: Sequence[int] = (), max_length: int = 128
    ) -> None:
        self.tokenizer = tokenizer
        self.suffix_ids = tuple(int(i) for i in suffix_ids)
        self.max_length = max_length

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    @property
    def pad_token_id(self) -> int:
        # Llama-2 has no pad token; pads are masked out, so any id serves
        pad = self.tokenizer.pad_token_id
        return 0 if pad is None else int(pad)

    @property
    def bos_token_id(self) -> int | None:
        return self.tokenizer.bos_token_id

    @property
    def eos_token_id(self) -> int | None:
        return self.tokenizer.eos_token_id

    def encode(self, instruction: str) -> list[int]:
        """Prompt ids (no BOS/stop) of one raw instruction, e.g. as written in a BDDL file."""
        if not isinstance(instruction, str):
            raise TypeError(f"instruction: expected str, got {type(instruction).__name__}")
        if not instruction.strip():
            raise ValueError("instruction: expected a non-empty string, got an empty one")
        ids = list(self.tokenizer.encode(format_prompt(instruction), add_special_tokens=False)) + list(
            self.suffix_ids
        )
        if len(ids) > self.max_length:
            raise ValueError(f"instruction: expected at most {self.max_length} prompt tokens, got {len(ids)}")
        return ids

    def encode_batch(self, instructions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw instructions -> ``input_ids (B, T)`` long and ``attention_mask (B, T)`` long, left-padded.

        The prompt template is applied here; pass the task instructions, not formatted prompts.
        """
        if isinstance(instructions, str) or len(instructions) == 0:
            raise ValueError("instructions: expected a non-empty sequence of strings")
        encoded = [self.encode(text) for text in instructions]
        length = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(encoded), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(encoded), length), dtype=torch.long)
        for row, ids in enumerate(encoded):
            input_ids[row, length - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, length - len(ids) :] = 1
        return input_ids, attention_mask

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    @classmethod
    def train(cls, instructions: Sequence[str] | None = None, *, vocab_size: int = 1024) -> PromptTokenizer:
        """A byte-level BPE trained on the prompts of ``instructions`` (default: every LIBERO suite).

        Byte-level, so unseen words still encode (into more, shorter pieces).
        """
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        texts = list(libero_instructions() if instructions is None else instructions)
        if not texts:
            raise ValueError("instructions: expected at least one instruction to train on, got none")
        bpe = Tokenizer(models.BPE(unk_token="<unk>"))
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        bpe.train_from_iterator([format_prompt(text) for text in texts], trainer)
        pad, bos, eos, unk = SPECIAL_TOKENS
        fast = PreTrainedTokenizerFast(
            tokenizer_object=bpe, pad_token=pad, bos_token=bos, eos_token=eos, unk_token=unk
        )
        return cls(fast)

    def save(self, directory: str | Path) -> None:
        """Write the tokenizer files and the prompt settings into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(directory))
        settings = {
            "suffix_ids": list(self.suffix_ids),
            "max_length": self.max_length,
            "template": PROMPT_TEMPLATE,
        }
        (directory / _SETTINGS_FILE).write_text(json.dumps(settings, indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> PromptTokenizer:
        """Load a folder written by ``save`` (or a plain HF tokenizer folder: no suffix ids)."""
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"{directory}: tokenizer folder not found")
        tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        settings_path = directory / _SETTINGS_FILE
        settings = json.loads(settings_path.read_text()) if settings_path.is_file() else {}
        template = settings.get("template", PROMPT_TEMPLATE)
        if template != PROMPT_TEMPLATE:
            raise ValueError(f"{settings_path}: expected template {PROMPT_TEMPLATE!r}, got {template!r}")
        return cls(
            tokenizer, suffix_ids=settings.get("suffix_ids", ()), max_length=settings.get("max_length", 128)
        )
