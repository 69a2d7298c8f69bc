"""Word-level tokenizers built offline from a known vocabulary (no hub download).

The demo and tiny models need real, saveable tokenizers; a word-level vocabulary over the
synthetic domains' questions and answers keeps sequences short and training fast.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
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
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        extra_special_tokens=extras,
        **kwargs,
    )
    return tokenizer
