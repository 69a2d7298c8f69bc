"""LingoQA's Lingo-Judge: a text classifier that decides whether an answer is correct.

Rule of the LingoQA benchmark code: for each reference the classifier reads
``"{cls}\\nQuestion: {question}\\nAnswer: {reference}\\nStudent: {prediction}"`` (reference and
prediction lower-cased and stripped, the question as given, at most 128 tokens), gives one
logit, and a question is answered correctly when the maximum logit over its references is > 0.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from mmneuron.defaults import EVALUATION
from mmneuron.errors import MmneuronError

MAX_LENGTH = 128  # the truncation length of the LingoQA evaluation code


class JudgeUnavailable(MmneuronError):
    """The judge model cannot be loaded; the other metrics can still be computed."""


class JudgeInputError(MmneuronError):
    """Answers the judge cannot score (a question without references)."""


def _looks_like_path(path_or_id: str | Path) -> bool:
    text = str(path_or_id)
    return isinstance(path_or_id, Path) or os.path.isabs(text) or text.startswith((".", "~"))


class LingoJudge:
    """A loaded Lingo-Judge (or any single-logit sequence classifier with the same input)."""

    def __init__(self, tokenizer, model, device: str | torch.device = "cpu", batch_size: int = 32):
        if model.config.num_labels != 1:
            raise JudgeUnavailable(f"a Lingo-Judge gives one logit per input; this model has {model.config.num_labels}")
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.batch_size = batch_size

    @classmethod
    def load(
        cls, path_or_id: str | Path = EVALUATION.judge, device: str | torch.device = "cpu", batch_size: int = 32
    ) -> LingoJudge:
        """Load tokenizer and classifier from a local folder or a Hub id.

        Raises JudgeUnavailable naming ``path_or_id`` when either cannot be loaded (a local path
        that does not exist fails at once, without a Hub lookup).
        """
        local = Path(path_or_id).expanduser()
        if local.exists():
            location = str(local)
        elif _looks_like_path(path_or_id):
            raise JudgeUnavailable(f"Lingo-Judge not found: {path_or_id} does not exist")
        else:
            location = str(path_or_id)  # a Hub id
        try:
            tokenizer = AutoTokenizer.from_pretrained(location)
            model = AutoModelForSequenceClassification.from_pretrained(location)
            return cls(tokenizer, model, device=device, batch_size=batch_size)
        except Exception as error:  # transformers raises OSError, ValueError, KeyError ... here
            raise JudgeUnavailable(f"cannot load Lingo-Judge from {path_or_id}: {error}") from error

    def input_text(self, question: str, reference: str, prediction: str, preprocess: bool = True) -> str:
        """The classifier's input for one (question, reference, prediction)."""
        if preprocess:
            reference, prediction = reference.lower().strip(), prediction.lower().strip()
        cls_token = self.tokenizer.cls_token or "[CLS]"
        return f"{cls_token}\nQuestion: {question}\nAnswer: {reference}\nStudent: {prediction}"

    @torch.inference_mode()
    def _logits(self, texts: list[str]) -> list[float]:
        logits = []
        starts = range(0, len(texts), self.batch_size)
        for start in tqdm(starts, desc="Lingo-Judge", unit="batch", disable=None, leave=False):
            encoded = self.tokenizer(
                texts[start : start + self.batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=MAX_LENGTH,
            ).to(self.device)
            logits.extend(self.model(**encoded).logits[:, 0].float().tolist())
        return logits

    def max_logits(
        self,
        questions: Sequence[str],
        references_list: Sequence[Sequence[str]],
        predictions: Sequence[str],
        preprocess: bool = True,
    ) -> list[float]:
        """Per question, the maximum logit over its references (all pairs run in batches).

        ``preprocess=False`` sends reference and prediction unchanged, as the MMNeuron authors'
        pipeline call did.
        """
        if not len(questions) == len(references_list) == len(predictions):
            raise ValueError(
                f"{len(questions)} questions, {len(references_list)} reference lists and "
                f"{len(predictions)} predictions: one of each per question is needed"
            )
        texts, owners = [], []
        for index, (question, references, prediction) in enumerate(zip(questions, references_list, predictions)):
            if isinstance(references, str) or not references:
                raise JudgeInputError(f"question {index} ({question!r}): references must be a non-empty list")
            for reference in references:
                texts.append(self.input_text(question, reference, prediction, preprocess))
                owners.append(index)
        best = [float("-inf")] * len(questions)
        for owner, logit in zip(owners, self._logits(texts)):
            best[owner] = max(best[owner], logit)
        return best

    def score(
        self,
        questions: Sequence[str],
        references_list: Sequence[Sequence[str]],
        predictions: Sequence[str],
        preprocess: bool = True,
    ) -> list[bool]:
        """Per question, whether the prediction is judged correct (max logit > 0)."""
        return [logit > 0 for logit in self.max_logits(questions, references_list, predictions, preprocess)]
