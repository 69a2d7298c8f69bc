"""Teacher-forced log-likelihood of a reference answer after its prompt: a noise-free effect measure.

The answer follows the prompt through the input path (``mmneuron.models.inputs.encode`` with
``answers``): appended as the model would write it, or as PaliGemma's causal suffix; the model's
image side (InstructBLIP's Q-Former) sees exactly the prompt it sees when generating. Per sample
the result is the mean over the answer's tokens of ``log p(token | image, prompt, earlier answer
tokens)`` (natural log), and the token count.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import torch
from PIL import Image
from tqdm.auto import tqdm

from mmneuron.errors import MmneuronError
from mmneuron.models.inputs import LEFT, encode, forward_options


class LikelihoodError(MmneuronError):
    """A sample whose reference answer cannot be scored."""


def reference_answer(answers: Sequence[str]) -> str:
    """The answer scored: the most frequent reference (the first of the most frequent on a tie)."""
    if not answers:
        raise LikelihoodError("no reference answer")
    counts = Counter(answers)
    return max(answers, key=lambda answer: counts[answer])  # max keeps the first of equal keys


@torch.no_grad()
def answer_loglik(
    model,
    processor,
    prompts: Sequence[str],
    images: Sequence[Image.Image],
    answers: Sequence[str],
    batch_size: int = 8,
    progress: bool = True,
    on_inputs: Callable[[dict, torch.Tensor], None] | None = None,
) -> list[tuple[float, int]]:
    """Per (prompt, image, answer): (mean log-likelihood per answer token, answer tokens);
    ``on_inputs`` sees each batch's inputs and answer positions (batch x sequence) before its forward.

    Batches are left-padded, so the answers end every row and only the last positions need
    logits (``logits_to_keep`` where the model has it).
    """
    if not len(prompts) == len(images) == len(answers):
        raise ValueError(f"{len(prompts)} prompts, {len(images)} images and {len(answers)} answers")
    model.eval()
    results = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="likelihood", unit="batch", disable=not progress):
        batch = slice(start, start + batch_size)
        encoded = encode(model, processor, images[batch], prompts[batch], padding_side=LEFT, answers=answers[batch])
        inputs, targets = encoded.inputs, encoded.answer_mask
        if on_inputs is not None:
            on_inputs(inputs, targets)
        # logits at position t predict the token at t + 1: keep them from the first answer token's predecessor
        first = int(targets.long().argmax(1).min())
        span = targets.shape[1] - first + 1
        logits = model(**inputs, **forward_options(model, logits_to_keep=span)).logits[:, -span:]
        log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # predicting positions first..end
        tokens = inputs["input_ids"][:, first:]
        picked = log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        scored = targets[:, first:]
        for row in range(len(tokens)):
            results.append((float(picked[row][scored[row]].mean()), int(scored[row].sum())))
    return results
