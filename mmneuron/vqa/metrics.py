"""Answer scoring for the five domains (docs/metrics.md): plain functions on strings.

Every metric has the signature ``metric(prediction, answers) -> float`` where ``answers`` holds
the reference answers (a single string counts as one reference); the option metrics
(:data:`OPTION_METRICS`) also take the sample's option letters as ``letters=``. Which metric a
domain uses is configuration: look it up by name with :func:`get_metric`.

Official metrics: ``vqa_accuracy`` (VQAv2), ``anls`` (DocVQA), ``exact_match`` (RSVQA),
``option_accuracy`` (PMC-VQA); LingoQA's Lingo-Judge lives in :mod:`mmneuron.vqa.judge`.

Variants, named apart so they are never used by accident:

- ``exact_match_punct``: exact match that also drops trailing punctuation ("Yes." matches "yes").
- ``vqa_accuracy_offline``: the official *offline* VQA script, including its quirk of skipping
  normalisation when all references agree ("Yes" scores 0 against ten "yes").
- ``*_compat``: the scoring of the MMNeuron authors' ``scripts/evaluate.py`` (see each function).
"""

from __future__ import annotations

import itertools
import re
import string
from collections.abc import Callable, Mapping, Sequence

from mmneuron.errors import MmneuronError

Metric = Callable[[str, Sequence[str]], float]


class MetricError(MmneuronError):
    """Answers a metric cannot score: no reference, a reference without an option letter, options
    that are neither a list nor a dict keyed by letter, an unknown metric name."""


# ---------------------------------------------------------------------------------------------
# VQAv2 answer normalisation (the official evaluation's processPunctuation + processDigitArticle)
# ---------------------------------------------------------------------------------------------

_PUNCTUATION = ';/[]"{}()=+\\_->@<`,?!'  # the official list; note: no apostrophe, colon or period
_DIGIT_COMMA = re.compile(r"\d,\d")
# The official pattern "(?!<=\d)(\.)(?!\d)" meant a look-behind but its first group is a
# look-ahead for the literal "<=": in effect a period is removed unless a digit follows it.
_PERIOD = re.compile(r"\.(?!\d)")
_NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})

# Contractions as the official table restores them. Each full form is reachable from every
# spelling that lacks one or more of its apostrophes ("dont", "couldnt've", "couldntve" ...).
# Forms whose apostrophe-less spelling is an ordinary word (it's/its, we'll/well, he'll/hell,
# i'm/im ...) are left out: the official table has none of them (its "Im", "Ive", "Id've" keys
# are capitalised and so never match the lower-cased words).
_CONTRACTION_FORMS = """
ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't
haven't he'd he'd've he's how'd how'll how's isn't it'd it'd've it'll ma'am mightn't
mightn't've might've mustn't must've needn't not've o'clock oughtn't shan't she'd've she's
should've shouldn't shouldn't've somebody'd somebody'd've somebody'll somebody's someone'd
someone'd've someone'll someone's something'd something'd've something'll that's there'd
there'd've there're there's they'd they'd've they'll they're they've 'twas wasn't we'd've we've
weren't what'll what're what's what've when's where'd where's where've who'd who'd've who'll
who's who've why'll why're why's won't would've wouldn't wouldn't've y'all y'all'll y'all'd've
you'd you'd've you'll you're you've
""".split()


def _apostrophe_variants(form: str) -> set[str]:
    """Every spelling of ``form`` with some (at least one) of its apostrophes dropped."""
    pieces = form.split("'")
    variants = set()
    for keep in itertools.product(("'", ""), repeat=len(pieces) - 1):
        variants.add(pieces[0] + "".join(mark + piece for mark, piece in zip(keep, pieces[1:])))
    variants.discard(form)
    return variants


CONTRACTIONS = {variant: form for form in _CONTRACTION_FORMS for variant in _apostrophe_variants(form)}


def _process_punctuation(text: str) -> str:
    """The official punctuation step, character for character in behaviour."""
    # A mark touching a space, or any text with a digit comma ("3,000"), is deleted outright, so
    # "3,000" becomes "3000"; otherwise a mark becomes a space ("black/white" -> "black white").
    delete_all = _DIGIT_COMMA.search(text) is not None
    out = text
    for mark in _PUNCTUATION:
        touches_space = mark + " " in text or " " + mark in text
        out = out.replace(mark, "" if delete_all or touches_space else " ")
    return _PERIOD.sub("", out)


def _process_digits_articles(text: str) -> str:
    """The official word step: lower-case, number words to digits, drop articles, contractions."""
    words = [_NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in _ARTICLES)


def _clean_whitespace(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_vqa_answer(text: str) -> str:
    """Normalise an answer as the official VQAv2 evaluation does.

    Newlines and tabs become spaces; punctuation is removed or turned into spaces (a mark is
    deleted when it touches a space or when the text has a digit comma, so "3,000" -> "3000");
    a period is removed unless a digit follows ("yes." -> "yes", "2.5" stays); the apostrophe is
    kept ("it's" stays); then lower-case, number words to digits ("two" -> "2", "none" -> "0"),
    articles a/an/the dropped, contractions restored ("dont" -> "don't"), single spaces.
    (The official script removes at most 32 periods through a misplaced argument; all go here.)
    """
    return _process_digits_articles(_process_punctuation(_clean_whitespace(text)))


# ---------------------------------------------------------------------------------------------
# Reference handling shared by all metrics
# ---------------------------------------------------------------------------------------------


def _references(answers: Sequence[str] | str) -> list[str]:
    """The references as a list; one string is one reference. No reference is an error."""
    references = [answers] if isinstance(answers, str) else list(answers)
    if not references:
        raise MetricError("no reference answers to score against")
    return references


# ---------------------------------------------------------------------------------------------
# VQA accuracy
# ---------------------------------------------------------------------------------------------


def _leave_one_out_accuracy(prediction: str, references: list[str]) -> float:
    """Average over references i of min(#matches among the others / needed, 1).

    ``needed`` is 3 as in the official rule, lowered to ``n - 1`` for fewer than four
    references so that a unanimous match still scores 1; one reference is plain exact match.
    """
    if len(references) == 1:
        return float(prediction == references[0])
    matches = sum(reference == prediction for reference in references)
    needed = min(3, len(references) - 1)
    per_reference = [min((matches - (reference == prediction)) / needed, 1.0) for reference in references]
    return sum(per_reference) / len(references)


def vqa_accuracy(prediction: str, answers: Sequence[str] | str) -> float:
    """Official VQA accuracy: the prediction and every reference are normalised
    (:func:`normalize_vqa_answer`), then each reference i scores min(#matches among the other
    references / 3, 1) and the scores are averaged (0, 0.3, 0.6, 0.9, 1.0 for 0..4+ matches
    among ten references).

    The prediction is always normalised, as on the evaluation server and in lmms-eval. With a
    number of references other than ten the same leave-one-out average is taken; for two or
    three references a match needs only the ``n - 1`` others (so unanimous agreement scores 1),
    and a single reference is exact match after normalisation.
    """
    references = [normalize_vqa_answer(answer) for answer in _references(answers)]
    return _leave_one_out_accuracy(normalize_vqa_answer(prediction), references)


def vqa_accuracy_offline(prediction: str, answers: Sequence[str] | str) -> float:
    """VQA accuracy as the official *offline* script (vqaEval.py) computes it.

    Only when the references disagree are they punctuation-processed and the prediction fully
    normalised; when all references are identical nothing is normalised, so "Yes" scores 0
    against ten "yes". Kept to compare with numbers produced by that script.
    """
    references = [_clean_whitespace(answer) for answer in _references(answers)]
    prediction = _clean_whitespace(prediction)
    if len(set(references)) > 1:
        references = [_process_punctuation(reference) for reference in references]
        prediction = _process_digits_articles(_process_punctuation(prediction))
    return _leave_one_out_accuracy(prediction, references)


def vqa_match_compat(prediction: str, answers: Sequence[str] | str) -> float:
    """The authors' VQAv2 scoring: 1 when the lower-cased prediction (not stripped, not
    normalised) equals a lower-cased reference. The authors kept only references with
    ``answer_confidence == "yes"``; pass those to reproduce their numbers exactly."""
    return float(prediction.lower() in {answer.lower() for answer in _references(answers)})


# ---------------------------------------------------------------------------------------------
# ANLS (DocVQA)
# ---------------------------------------------------------------------------------------------


def levenshtein(first: str, second: str) -> int:
    """Edit distance (insertions, deletions, substitutions each cost 1)."""
    if len(first) < len(second):
        first, second = second, first
    previous = list(range(len(second) + 1))
    for i, char_first in enumerate(first, start=1):
        current = [i]
        for j, char_second in enumerate(second, start=1):
            current.append(
                min(
                    previous[j] + 1,  # deletion
                    current[j - 1] + 1,  # insertion
                    previous[j - 1] + (char_first != char_second),  # substitution
                )
            )
        previous = current
    return previous[-1]


def _anls_text(text: str) -> str:
    return " ".join(text.lower().split())


def anls(prediction: str, answers: Sequence[str] | str, threshold: float = 0.5) -> float:
    """Average Normalised Levenshtein Similarity for one question (DocVQA).

    Texts are lower-cased, stripped and their inner whitespace collapsed. For each reference
    NL = levenshtein / max(len); the similarity 1 - NL is kept when NL <= ``threshold`` and is 0
    otherwise. At exactly NL = 0.5 the score is 0.5, as in the official DocVQA evaluation script
    and lmms-eval (which zero a similarity only below 0.5). The result is the maximum over the
    references; two empty strings have similarity 1.
    """
    prediction = _anls_text(prediction)
    best = 0.0
    for answer in _references(answers):
        answer = _anls_text(answer)
        length = max(len(prediction), len(answer))
        distance = levenshtein(prediction, answer) / length if length else 0.0
        if distance <= threshold:
            best = max(best, 1.0 - distance)
    return best


def anls_compat(prediction: str, answers: Sequence[str] | str) -> float:
    """The authors' DocVQA scoring: the ``anls`` package with threshold 1.0, i.e. the plain
    normalised Levenshtein similarity with no cut-off."""
    return anls(prediction, answers, threshold=1.0)


# ---------------------------------------------------------------------------------------------
# Exact match (RSVQA)
# ---------------------------------------------------------------------------------------------


def exact_match(prediction: str, answers: Sequence[str] | str) -> float:
    """1 when the prediction equals a reference after lower-casing and stripping, else 0."""
    prediction = prediction.strip().lower()
    return float(any(prediction == answer.strip().lower() for answer in _references(answers)))


_TRAILING_PUNCTUATION = re.compile(r"[\s.,;:!?]+$")


def _punct_text(text: str) -> str:
    return _TRAILING_PUNCTUATION.sub("", text.strip().lower())


def exact_match_punct(prediction: str, answers: Sequence[str] | str) -> float:
    """A lenient variant of :func:`exact_match`: trailing punctuation (". , ; : ! ?") is also
    removed, so "Yes." matches "yes". Not the official rule; for checking how much a model's
    punctuation alone costs."""
    prediction = _punct_text(prediction)
    return float(any(prediction == _punct_text(answer) for answer in _references(answers)))


def exact_match_compat(prediction: str, answers: Sequence[str] | str) -> float:
    """The authors' RSVQA scoring: lower-cased equality, nothing stripped."""
    return float(any(prediction.lower() == answer.lower() for answer in _references(answers)))


# ---------------------------------------------------------------------------------------------
# Option letters (PMC-VQA)
# ---------------------------------------------------------------------------------------------

OPTION_LETTERS = "ABCD"  # the letters of a sample without options (PMC-VQA has four)
# A capital letter standing alone: no letter, digit, apostrophe or hyphen on either side, so
# "Answer", "CD4", "B-cell" and "A's" hold no option letter while "(C)", "D)", "B." and "E:" do.
_STANDALONE_CAPITAL = re.compile(r"(?<![\w'\u2019-])([A-Z])(?![\w'\u2019-])")  # \u2019: the typographic apostrophe
# "A" followed by a space and a lower-case word or a number is the English article ("A cat").
_ARTICLE_USE = re.compile(r" +[a-z0-9]")


def option_letter(prediction: str, letters: str = OPTION_LETTERS) -> str | None:
    """The first standalone capital option letter in ``prediction``, or None.

    Rule: the first capital letter from ``letters`` with no letter, digit, apostrophe or hyphen
    next to it, skipping an "A" used as the article (followed by a space and a lower-case word
    or a digit: "A cat", "A 3 cm mass"). So "B", "(C)", "Answer: D.", "D) blah", "The answer is
    B" give the letter; "A cat" and "Answer" give None; lower-case letters never count (the
    lower-case "a" is nearly always the article). A prose answer may still contain a
    standalone capital ("Vitamin D"), which is then taken, as the authors' scoring would.
    """
    for match in _STANDALONE_CAPITAL.finditer(prediction):
        letter = match.group(1)
        if letter not in letters:
            continue
        if letter == "A" and _ARTICLE_USE.match(prediction, match.end()):
            continue
        return letter
    return None


def option_letters(options: Sequence[str] | Mapping[str, str] | None) -> str:
    """The option letters of a sample's ``meta["options"]``: A, B, C ... one per entry of a list
    (the order the prompt shows them in), the keys of a dict (each one capital letter), or
    :data:`OPTION_LETTERS` when there are no options."""
    if not options:
        return OPTION_LETTERS
    if isinstance(options, Mapping):
        for key in options:
            if not (isinstance(key, str) and len(key) == 1 and key in string.ascii_uppercase):
                raise MetricError(f"options keyed by {key!r}: the keys of a dict of options must be capital letters")
        return "".join(options)
    if isinstance(options, str) or not isinstance(options, Sequence):
        raise MetricError(f"options must be a list or a dict keyed by letter, got {options!r:.80}")
    if len(options) > len(string.ascii_uppercase):
        raise MetricError(f"{len(options)} options, more than the letters A-Z")
    return string.ascii_uppercase[: len(options)]


def _reference_letters(answers: Sequence[str] | str, letters: str) -> set[str]:
    found = set()
    for answer in _references(answers):
        letter = option_letter(answer.strip(), letters)
        if letter is None:
            other = option_letter(answer.strip(), string.ascii_uppercase)
            if other is not None:
                raise MetricError(f"reference answer {answer!r}: letter {other} is not one of the options {letters}")
            raise MetricError(f"reference answer {answer!r} holds no option letter ({letters})")
        found.add(letter)
    return found


def option_accuracy(prediction: str, answers: Sequence[str] | str, *, letters: str = OPTION_LETTERS) -> float:
    """1 when :func:`option_letter` of the prediction is the letter of a reference ("B",
    "(B)" or "B: text"). ``letters`` are the sample's option letters (:func:`option_letters`);
    a reference without one of them is an error."""
    reference = _reference_letters(answers, letters)  # checked even when the prediction holds no letter
    return float(option_letter(prediction, letters) in reference)


def option_accuracy_compat(prediction: str, answers: Sequence[str] | str, *, letters: str = OPTION_LETTERS) -> float:
    """The authors' PMC-VQA scoring in effect: the number of characters of the prediction equal
    to the reference letter, wherever they stand. Against "B": "B" and "The answer is B" score 1,
    "Because B" scores 2 and "A" scores 0; against "A", "Answer: A" scores 2. Per-sample values
    above 1 are possible, as in the authors' published numbers. ``letters`` only checks the
    reference, as in :func:`option_accuracy`.
    """
    reference = _reference_letters(answers, letters)
    return float(sum(char in reference for char in prediction))


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

METRICS: dict[str, Metric] = {
    "vqa_accuracy": vqa_accuracy,
    "anls": anls,
    "exact_match": exact_match,
    "option_accuracy": option_accuracy,
    "vqa_accuracy_offline": vqa_accuracy_offline,
    "vqa_match_compat": vqa_match_compat,
    "anls_compat": anls_compat,
    "exact_match_punct": exact_match_punct,
    "exact_match_compat": exact_match_compat,
    "option_accuracy_compat": option_accuracy_compat,
}


# The metrics that take the sample's option letters as ``letters=`` (see :func:`option_letters`).
OPTION_METRICS = frozenset({"option_accuracy", "option_accuracy_compat"})


def get_metric(name: str) -> Metric:
    """The metric registered as ``name``; an unknown name raises MetricError listing the known."""
    try:
        return METRICS[name]
    except KeyError:
        raise MetricError(f"unknown metric {name!r}; known metrics: {', '.join(sorted(METRICS))}") from None
