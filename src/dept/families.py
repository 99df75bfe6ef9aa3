"""The three model families as data: how each is loaded and where DePT meets it.

The mechanism (prompt + low-rank update on the input embeddings) is the same for all;
what differs is which Auto class loads the base, whether labels live in the input
sequence (decoder-only), whether position ids must be passed, and whether the prompt
goes after a leading [CLS] token and a trainable head reads the output (encoders).
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    PretrainedConfig,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES


@dataclass(frozen=True)
class Family:
    name: str
    auto_class: type
    labels_in_input: bool
    """Decoder-only: the target follows the source in input_ids, so labels are re-laid out
    with the prompt, and only source tokens receive the low-rank update."""
    prompt_offset: int
    """Real tokens kept before the soft prompt: 1 keeps an encoder's [CLS] first."""
    has_head: bool
    """Encoder-only: a trainable classification/regression head reads the output."""
    generates: bool
    default_padding_side: str
    prompt_shared: bool
    """Causal attention: a prompt at the front sees no input, so its keys and values are the same
    for every row and are computed once per batch (prefix.py). A bidirectional encoder's are not."""


SEQ2SEQ = Family("seq2seq", AutoModelForSeq2SeqLM, labels_in_input=False, prompt_offset=0,
                 has_head=False, generates=True, default_padding_side="right", prompt_shared=False)
CAUSAL = Family("causal", AutoModelForCausalLM, labels_in_input=True, prompt_offset=0,
                has_head=False, generates=True, default_padding_side="left", prompt_shared=True)
ENCODER = Family("encoder", AutoModel, labels_in_input=False, prompt_offset=1,
                 has_head=True, generates=False, default_padding_side="right", prompt_shared=False)
FAMILIES = {f.name: f for f in (SEQ2SEQ, CAUSAL, ENCODER)}


def detect_family(config: PretrainedConfig) -> Family:
    """Encoder-decoder configs are seq2seq; masked-LM architectures (BERT, RoBERTa, MiniLM,
    DeBERTa, ...) are encoders; everything else is treated as decoder-only."""
    if getattr(config, "is_encoder_decoder", False):
        return SEQ2SEQ
    if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return ENCODER
    return CAUSAL


def get_family(name_or_config: str | PretrainedConfig) -> Family:
    if isinstance(name_or_config, str):
        if name_or_config not in FAMILIES:
            raise ValueError(f"unknown model family {name_or_config!r}; choose from {sorted(FAMILIES)}")
        return FAMILIES[name_or_config]
    return detect_family(name_or_config)
