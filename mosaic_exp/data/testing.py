"""Tiny, fast, offline stand-ins for tests: a byte-level BPE tokenizer and a random Llama.

Not used by the library itself; tests (and smoke runs) import these to avoid loading real models.
"""

from __future__ import annotations

import functools

import torch

__all__ = ["tiny_llama", "tiny_tokenizer"]

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    " = Robert Boulter = \n Robert Boulter is an English film , television and theatre actor .",
    "Question: How do I ready a guinea pig cage for its new occupants?\nAnswer: Provide bedding.",
    "no it was n't black monday but while the new york stock exchange did n't fall apart",
    "Sarah was a much better surgeon than Maria so she always got the easier cases.",
    "We offer valet parking as well as street and private lot. Our catering has no limits.",
    "Which statement best explains why photosynthesis is the foundation of most food webs?",
] * 4


@functools.lru_cache(maxsize=4)
def _tokenizer_object(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    return tok.to_str()


def tiny_tokenizer(vocab_size: int = 400):
    """A byte-level BPE ``PreTrainedTokenizerFast`` (encodes any text; no BOS added)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    obj = Tokenizer.from_str(_tokenizer_object(vocab_size))
    tok = PreTrainedTokenizerFast(
        tokenizer_object=obj, bos_token="<s>", eos_token="</s>", pad_token="<pad>", model_max_length=1 << 30
    )
    tok.name_or_path = f"tiny-bytelevel-bpe-{vocab_size}"
    return tok


def tiny_llama(
    vocab_size: int, *, hidden: int = 64, layers: int = 2, max_positions: int = 512, seed: int = 0
):
    """A randomly initialised ``LlamaForCausalLM`` (fp32, eval mode), deterministic in ``seed``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
        # random init gives near-uniform predictions; sharpen the head so scores differ clearly
        model.lm_head.weight.data.mul_(8.0)
    return model.float().eval()
