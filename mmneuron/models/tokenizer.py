"""Word-level tokenizers built offline from a known vocabulary (no hub download).

The demo and tiny models need real, saveable tokenizers; a word-level vocabulary over the
synthetic domains' questions and answers keeps sequences short and training fast. A word outside
the vocabulary (a folder domain's `puppy`) becomes the one ``<unk>`` token: the model sees that a
word was there, not which. Extraction counts such positions (:func:`unknown_positions`) and
records the number with the counts, so a domain whose prompts the tokenizer cannot read shows it.

The published models' processors (mmneuron.models.published) need the same kind of tokenizer with
the special tokens at the published ids (``<image>`` = 32000 for LLaVA-NeXT ...), so that the
processor's input ids match the model config: :func:`build_fixed_id_tokenizer`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

BOS, EOS, UNK, PAD = "<s>", "</s>", "<unk>", "<pad>"


def build_word_tokenizer(
    words: Iterable[str], extra_special_tokens: Iterable[str] = (), **kwargs
) -> PreTrainedTokenizerFast:
    """A fast tokenizer over ``words`` (split on whitespace and punctuation).

    ``extra_special_tokens`` (for example ``<image>``) are added as special tokens, never split.
    Keyword arguments override the tokenizer's attributes (``padding_side``, ``chat_template`` ...).
    """
    specials = [PAD, UNK, BOS, EOS]
    extras = [token for token in dict.fromkeys(extra_special_tokens) if token not in specials]
    vocab = {token: index for index, token in enumerate(specials + extras)}
    for word in sorted(set(words)):
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        extra_special_tokens=extras,
        **kwargs,
    )


def _fixed_vocab(words: Iterable[str], tokens: Mapping[str, int], vocab_size: int) -> dict[str, int]:
    """``tokens`` at their ids, ``words`` in the free ids from the lowest, filler names in the rest."""
    if len(set(tokens.values())) != len(tokens) or not all(0 <= index < vocab_size for index in tokens.values()):
        raise ValueError(f"token ids must be distinct and below vocab_size {vocab_size}: {dict(tokens)}")
    vocab = dict(tokens)
    free = (index for index in range(vocab_size) if index not in set(tokens.values()))
    for word in sorted(set(words) - set(tokens)):
        vocab[word] = next(free)
    for index in free:
        vocab[f"<unused{index}>"] = index
    return vocab


def build_fixed_id_tokenizer(
    words: Iterable[str],
    tokens: Mapping[str, int],
    vocab_size: int,
    special_tokens: Mapping[str, str],
    extra_special_tokens: Iterable[str] = (),
    **kwargs,
) -> PreTrainedTokenizerFast:
    """A word-level tokenizer of exactly ``vocab_size`` ids with ``tokens`` at the given ids.

    ``special_tokens`` maps roles to tokens (``bos_token``: ``<s>`` ...; ``unk_token`` is required);
    ``extra_special_tokens`` (``<image>``) are never split. Keyword arguments as in
    :func:`build_word_tokenizer`.
    """
    vocab = _fixed_vocab(words, tokens, vocab_size)
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=special_tokens["unk_token"]))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, extra_special_tokens=list(extra_special_tokens), **special_tokens, **kwargs
    )


def build_bert_style_tokenizer(
    words: Iterable[str], tokens: Mapping[str, int] | None = None, vocab_size: int | None = None, **kwargs
) -> PreTrainedTokenizerFast:
    """A lower-casing BERT-style WordPiece tokenizer (``[CLS] text [SEP]``), like InstructBLIP's
    Q-Former one; ``tokens`` (default: the five BERT specials from id 0) at fixed ids when given,
    with ``vocab_size`` ids in all."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens = dict(tokens) if tokens is not None else {token: index for index, token in enumerate(specials)}
    words = set(words)  # upper-case words are unreachable behind the lower-casing normaliser, but harmless
    vocab = _fixed_vocab(words, tokens, vocab_size or len(set(tokens) | words))
    backend = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    backend.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        **kwargs,
    )


def unknown_positions(tokenizer, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> int:
    """The real (unmasked) positions holding the tokenizer's unknown token; 0 for a tokenizer without one
    of its own (byte-level BPEs have none; InstructBLIP's names ``</s>``, its BOS, as unknown)."""
    unknown = getattr(tokenizer, "unk_token_id", None)
    if unknown is None or unknown in {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}:
        return 0
    return int(((input_ids == unknown) & attention_mask.bool()).sum())
