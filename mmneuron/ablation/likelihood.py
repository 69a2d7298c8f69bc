"""Teacher-forced log-likelihood of a reference answer after its prompt: a noise-free effect measure.

The answer follows the prompt as the model would write it: after one space, unless the prompt
ends in whitespace. The prompt's tokens must be a prefix of the tokens of prompt + answer (true for
word-level and SentencePiece/BPE tokenizers when the answer starts a new word); the answer's
tokens are the rest. Per sample the result is the mean over the answer's tokens of
``log p(token | image, prompt, earlier answer tokens)`` (natural log), and the token count.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Sequence

import torch
from PIL import Image
from tqdm.auto import tqdm

from mmneuron.models.generation import encode, position_ids


class LikelihoodError(ValueError):
    """An answer whose tokens cannot be told apart from the prompt's."""


def reference_answer(answers: Sequence[str]) -> str:
    """The answer scored: the most frequent reference (the first of the most frequent on a tie)."""
    if not answers:
        raise LikelihoodError("no reference answer")
    counts = Counter(answers)
    return max(answers, key=lambda answer: counts[answer])  # max keeps the first of equal keys


def with_answer(prompt: str, answer: str) -> str:
    return prompt + answer.strip() if prompt[-1:].isspace() else f"{prompt} {answer.strip()}"


def answer_token_count(tokenizer, prompt: str, answer: str) -> int:
    """How many tokens ``answer`` adds after ``prompt``; the prompt's tokens must stay a prefix."""
    before = tokenizer(prompt)["input_ids"]
    after = tokenizer(with_answer(prompt, answer))["input_ids"]
    if after[: len(before)] != before or len(after) == len(before):
        raise LikelihoodError(
            f"the tokens of {answer!r} cannot be separated from the prompt's (prompt ends {prompt[-30:]!r})"
        )
    return len(after) - len(before)


@torch.no_grad()
def answer_loglik(
    model,
    processor,
    prompts: Sequence[str],
    images: Sequence[Image.Image],
    answers: Sequence[str],
    batch_size: int = 8,
    progress: bool = True,
) -> list[tuple[float, int]]:
    """Per (prompt, image, answer): (mean log-likelihood per answer token, answer tokens).

    Batches are left-padded, so every row's answer ends at the last position and only the last
    ``max answer tokens + 1`` positions need logits (``logits_to_keep`` where the model has it).
    Position ids are left to the model (Qwen2-VL computes its own) unless padding follows real
    tokens.
    """
    if not len(prompts) == len(images) == len(answers):
        raise ValueError(f"{len(prompts)} prompts, {len(images)} images and {len(answers)} answers")
    if processor.tokenizer.padding_side != "left":
        raise ValueError("the likelihood needs a left-padding tokenizer (padding_side='left')")
    keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
    model.eval()
    results = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="likelihood", unit="batch", disable=not progress):
        batch = slice(start, start + batch_size)
        lengths = [
            answer_token_count(processor.tokenizer, prompt, answer)
            for prompt, answer in zip(prompts[batch], answers[batch])
        ]
        texts = [with_answer(prompt, answer) for prompt, answer in zip(prompts[batch], answers[batch])]
        inputs = encode(processor, images[batch], texts, model)
        span = max(lengths) + 1
        extra = {"logits_to_keep": span} if keeps_logits else {}
        mask = inputs["attention_mask"]
        if (mask.cummax(1).values > mask).any():
            # padding after real tokens (InstructBLIP pads between query and text tokens): count
            # positions over real tokens only, as generate does
            extra["position_ids"] = position_ids(mask)
        logits = model(**inputs, **extra).logits[:, -span:]
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        for row, length in enumerate(lengths):
            # logits at position t predict the token at t + 1
            targets = inputs["input_ids"][row, -length:]
            picked = log_probs[row, -length - 1 : -1].gather(-1, targets.unsqueeze(-1))
            results.append((float(picked.mean()), length))
    return results
