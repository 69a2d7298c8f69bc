"""Answer metrics (official VQA rules, ANLS, exact match, option letters) and the Lingo-Judge."""

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from mmneuron.errors import MmneuronError
from mmneuron.models.tokenizer import build_word_tokenizer
from mmneuron.vqa import metrics
from mmneuron.vqa.judge import JudgeInputError, JudgeUnavailable, LingoJudge
from mmneuron.vqa.metrics import (
    MetricError,
    anls,
    anls_compat,
    exact_match,
    exact_match_compat,
    exact_match_punct,
    get_metric,
    levenshtein,
    normalize_vqa_answer,
    option_accuracy,
    option_accuracy_compat,
    option_letter,
    option_letters,
    vqa_accuracy,
    vqa_accuracy_offline,
    vqa_match_compat,
)

# --- VQA normalisation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a dog", "dog"),
        ("An apple", "apple"),
        ("the red car", "red car"),
        ("two", "2"),
        ("Three cats", "3 cats"),
        ("none", "0"),
        ("yes.", "yes"),
        ("Yes!", "yes"),
        ("it's", "it's"),  # the apostrophe is not punctuation
        ("dont", "don't"),
        ("isnt", "isn't"),
        ("couldntve", "couldn't've"),
        ("its", "its"),  # an ordinary word, never turned into "it's"
        ("3,000", "3000"),  # a digit comma: marks deleted, the number stays one token
        ("red,blue", "red blue"),  # otherwise a mark touching no space becomes a space
        ("yes, it is", "yes it is"),  # a mark touching a space is deleted
        ("black/white", "black white"),
        ("t-shirt", "t shirt"),
        ("2.5", "2.5"),  # a period before a digit stays
        ("e.g. this", "eg this"),
        ("10:30", "10:30"),  # the colon is not in the official list
        ("  Tennis\tracket\n", "tennis racket"),
        ("a,b", "b"),  # "," -> " ", then the article "a" goes
    ],
)
def test_normalize_vqa_answer(text, expected):
    assert normalize_vqa_answer(text) == expected


# --- VQA accuracy ---------------------------------------------------------------------------


@pytest.mark.parametrize("matches, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_vqa_accuracy_leave_one_out(matches, expected):
    # m matches out of 10: (10 - m) leave-one-out subsets hold m matches, m subsets hold m - 1.
    hand = ((10 - matches) * min(matches / 3, 1) + matches * min(max(matches - 1, 0) / 3, 1)) / 10
    assert hand == pytest.approx(expected)
    answers = ["cat"] * matches + ["dog"] * (10 - matches)
    assert vqa_accuracy("cat", answers) == pytest.approx(expected)


def test_vqa_accuracy_normalises_prediction_and_references():
    assert vqa_accuracy("Yes", ["yes"] * 10) == 1.0
    assert vqa_accuracy("Two.", ["2"] * 3 + ["3"] * 7) == pytest.approx(0.9)
    assert vqa_accuracy("the dog", ["Dog"] * 10) == 1.0


def test_vqa_accuracy_offline_reproduces_the_all_agree_quirk():
    assert vqa_accuracy_offline("Yes", ["yes"] * 10) == 0.0
    assert vqa_accuracy_offline("yes", ["yes"] * 10) == 1.0
    # Once the references disagree the prediction is normalised as usual.
    assert vqa_accuracy_offline("Yes.", ["yes"] * 9 + ["no"]) == 1.0
    assert vqa_accuracy_offline("Two", ["2", "2", "3", "3"] + ["4"] * 6) == pytest.approx(
        vqa_accuracy("Two", ["2", "2", "3", "3"] + ["4"] * 6)
    )


def test_vqa_accuracy_other_reference_counts():
    assert vqa_accuracy("cat", ["cat"]) == 1.0 and vqa_accuracy("dog", ["cat"]) == 0.0
    assert vqa_accuracy("cat", "cat") == 1.0  # one string is one reference
    assert vqa_accuracy("cat", ["cat", "cat"]) == 1.0
    assert vqa_accuracy("cat", ["cat", "dog"]) == pytest.approx(0.5)  # (0 + 1) / 2
    assert vqa_accuracy("cat", ["cat", "cat", "cat"]) == 1.0
    assert vqa_accuracy("cat", ["cat", "dog", "dog"]) == pytest.approx(1 / 3)  # (0 + 1/2 + 1/2) / 3
    with pytest.raises(MetricError, match="no reference"):
        vqa_accuracy("cat", [])


def test_vqa_match_compat():
    assert vqa_match_compat("Yes", ["yes", "no"]) == 1.0
    assert vqa_match_compat("yes.", ["yes"]) == 0.0  # no normalisation
    assert vqa_match_compat(" yes", ["yes"]) == 0.0  # not even stripped


# --- ANLS -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "first, second, distance",
    [
        ("", "", 0),
        ("abc", "", 3),
        ("abc", "abc", 0),
        ("abc", "abd", 1),
        ("kitten", "sitting", 3),
        ("flaw", "lawn", 2),
        ("ab", "ba", 2),
    ],
)
def test_levenshtein(first, second, distance):
    assert levenshtein(first, second) == distance == levenshtein(second, first)


def test_anls_threshold():
    assert anls("abc", ["abd"]) == pytest.approx(1 - 1 / 3)
    assert anls("abcde", ["abcxy"]) == pytest.approx(0.6)  # NL = 0.4 <= 0.5: kept
    assert anls("abcde", ["abxyz"]) == 0.0  # NL = 0.6
    assert anls("abcdefg", ["abcdxyz"]) == pytest.approx(4 / 7)  # NL = 3/7
    assert anls("ab", ["ac"], threshold=0.4) == 0.0
    assert anls("abcde", ["abxyz"], threshold=0.6) == pytest.approx(0.4)


def test_anls_keeps_a_similarity_of_exactly_one_half():
    # The official DocVQA script and lmms-eval zero a similarity only when it is below 0.5.
    assert anls("ac", ["ab"]) == 0.5  # 1 substitution / 2 characters
    assert anls("abcd", ["abxy"]) == 0.5  # 2 / 4
    assert anls("abcdefgh", ["abcdwxyz"]) == 0.5  # 4 / 8
    assert anls("abcdefgh", ["abcvwxyz"]) == 0.0  # 5 / 8 > 0.5


@pytest.mark.parametrize(
    "prediction, references, expected",
    [
        ("Tuesday", ["tuesday"], 1.0),  # case is ignored
        ("1995", ["1996"], 1 - 1 / 4),  # one substitution in 4 characters
        ("1958", ["1985"], 1 - 2 / 4),  # two digits swapped: 2 substitutions, exactly 0.5, kept
        ("45,000", ["$ 45,000"], 1 - 2 / 8),  # "$" and " " deleted; the longer text has 8 characters
        ("Pizza", ["Pisa"], 1 - 2 / 5),  # s -> z, one z inserted
        ("ITC Ltd", ["ITC Limited"], 1 - 4 / 11),  # i, m, i, e deleted from "limited"
        ("28%", ["0.28"], 0.0),  # "0" and "." deleted, "%" inserted: 3 / 4 > 0.5
        ("Pizza", ["Pizza Hut", "Pisa"], 1 - 2 / 5),  # best reference: "pisa" (0.6) beats "pizza hut" (5/9)
        ("total   due", ["Total Due "], 1.0),  # whitespace stripped and collapsed
    ],
)
def test_anls_docvqa_worked_examples(prediction, references, expected):
    assert anls(prediction, references) == pytest.approx(expected)


def test_anls_max_over_references_case_and_spaces():
    assert anls("Hello", ["world", "HELLO"]) == 1.0
    assert anls("  total  due ", ["Total Due"]) == 1.0
    assert anls("abc", ["xyz", "abd", "abx"]) == pytest.approx(2 / 3)
    assert anls("", [""]) == 1.0
    assert anls("abc", [""]) == 0.0


def test_anls_compat_has_no_threshold():
    assert anls_compat("ab", ["ac"]) == pytest.approx(0.5)
    assert anls_compat("abcd", ["axyz"]) == pytest.approx(0.25)
    assert anls_compat("abc", ["xyz"]) == 0.0
    assert anls_compat("abcdefgh", ["abcvwxyz"]) == pytest.approx(3 / 8)


# --- exact match ----------------------------------------------------------------------------


def test_exact_match_lower_cases_and_strips_only():
    assert exact_match("  No ", ["yes", "no"]) == 1.0
    assert exact_match("Rural\n", ["rural"]) == 1.0
    assert exact_match("0.5", ["0.5"]) == 1.0
    assert exact_match("Yes.", ["yes"]) == 0.0  # punctuation is kept
    assert exact_match("rural!?", ["Rural"]) == 0.0
    assert exact_match("yes it is", ["yes"]) == 0.0
    assert exact_match_compat("Yes", ["yes"]) == 1.0
    assert exact_match_compat(" yes", ["yes"]) == 0.0  # not even stripped


def test_exact_match_punct_also_drops_trailing_punctuation():
    assert get_metric("exact_match_punct") is exact_match_punct
    assert exact_match_punct("Yes.", ["yes"]) == 1.0
    assert exact_match_punct("rural!?", ["Rural"]) == 1.0
    assert exact_match_punct(" No ;", ["no."]) == 1.0
    assert exact_match_punct("0.5", ["0.5"]) == 1.0
    assert exact_match_punct("yes, it is", ["yes"]) == 0.0  # only trailing marks go


# --- option letters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, letter",
    [
        ("B", "B"),
        ("(C)", "C"),
        ("Answer: D.", "D"),
        ("D) blah", "D"),
        ("A", "A"),
        ("A.", "A"),
        ("A: The liver", "A"),
        ("The answer is B.", "B"),
        ("I think it is C", "C"),
        ("Option D", "D"),
        ("E", None),  # the default letters are A-D
        ("[B]", "B"),
        ("**C**", "C"),
        ("B, because the lesion is round", "B"),
        ("C and D", "C"),
        ("A\nbecause of the shadow", "A"),
        ("A, a cat", "A"),
        ("A cat", None),  # the article
        ("A 3 cm mass", None),
        ("A cat; answer: B", "B"),
        ("Answer", None),
        ("CD4 cells", None),
        ("B-cell lymphoma", None),
        ("It's the patient's", None),
        ("b", None),  # lower case never counts
        ("F", None),
        ("", None),
        ("Vitamin D deficiency", "D"),  # a standalone capital, as the authors' rule would take
    ],
)
def test_option_letter(text, letter):
    assert option_letter(text) == letter


def test_option_letter_alphabet_is_configurable():
    assert option_letter("E", letters="ABCD") is None
    assert option_letter("E. coli, so B", letters="ABCD") == "B"


@pytest.mark.parametrize(
    "options, letters",
    [
        (None, "ABCD"),  # no options: A-D
        ([], "ABCD"),
        (["liver", "lung", "heart"], "ABC"),  # a list: A, B, C ... in order
        (("a", "b", "c", "d", "e"), "ABCDE"),
        ({"A": "liver", "B": "lung"}, "AB"),  # a dict: its keys, in order
        ({"C": "heart", "A": "liver"}, "CA"),
    ],
)
def test_option_letters_of_the_sample_options(options, letters):
    assert option_letters(options) == letters


@pytest.mark.parametrize("options", [{"a": "liver"}, {"AB": "liver"}, {"1": "liver"}, "A. liver B. lung", ["x"] * 27])
def test_option_letters_of_something_else_is_a_user_error(options):
    with pytest.raises(MetricError, match="options"):
        option_letters(options)


def test_option_accuracy_takes_the_letters_of_the_sample():
    prediction = "E. coli, so the answer is B"
    assert option_letter(prediction) == "B"  # by default E is no option letter
    assert option_accuracy(prediction, ["B"]) == 1.0
    assert option_accuracy(prediction, ["B"], letters=option_letters(["w", "x", "y", "z"])) == 1.0
    assert option_accuracy(prediction, ["B"], letters="ABCDE") == 0.0  # a fifth option: E is taken
    assert option_accuracy("E", ["E: none of these"], letters="ABCDE") == 1.0
    assert option_accuracy_compat("E", ["E"], letters="ABCDE") == 1.0


def test_a_reference_letter_outside_the_options_is_a_user_error():
    with pytest.raises(MetricError, match=r"'E'.*not one of the options ABCD"):
        option_accuracy("E", ["E"])
    with pytest.raises(MetricError, match=r"'D: lung'.*not one of the options ABC"):
        option_accuracy_compat("D", ["D: lung"], letters="ABC")


def test_option_accuracy():
    assert option_accuracy("The answer is (B).", ["B"]) == 1.0
    assert option_accuracy("B", ["B: pneumonia"]) == 1.0
    assert option_accuracy("C", ["B"]) == 0.0
    assert option_accuracy("A cat", ["A"]) == 0.0
    with pytest.raises(MetricError, match="no option letter"):
        option_accuracy("B", ["pneumonia"])


def test_option_accuracy_compat_counts_every_matching_character():
    assert option_accuracy_compat("B", ["B"]) == 1.0
    assert option_accuracy_compat("Because B", ["B"]) == 2.0
    assert option_accuracy_compat("Answer: A", ["A"]) == 2.0
    assert option_accuracy_compat("C", ["B"]) == 0.0


# --- registry -------------------------------------------------------------------------------


def test_registry():
    for name in ("vqa_accuracy", "anls", "exact_match", "option_accuracy"):
        assert get_metric(name) is metrics.METRICS[name]
    assert get_metric("anls_compat")("ab", ["ac"]) == pytest.approx(0.5)
    with pytest.raises(MetricError, match=r"'bleu'.*known metrics: anls, anls_compat"):
        get_metric("bleu")


@pytest.mark.parametrize(
    "call",
    [
        lambda: vqa_accuracy("cat", []),
        lambda: anls("cat", []),
        lambda: exact_match("cat", ()),
        lambda: option_accuracy("B", ["pneumonia"]),
        lambda: option_accuracy_compat("B", [""]),
        lambda: get_metric("bleu"),
    ],
)
def test_data_errors_are_user_errors(call):
    with pytest.raises(MmneuronError):
        call()


# --- Lingo-Judge ----------------------------------------------------------------------------

QUESTIONS = [
    "Is there a car?",
    "What colour is the light?",
    "How many people are crossing?",
    "Should the car stop?",
    "Is the road wet?",
    "What is ahead?",
]
REFERENCES = [["Yes", "yes, one car"], ["red"], ["two people", "2"], ["yes"], ["no", "it is dry"], ["a bus", "a truck"]]
PREDICTIONS = ["Yes.", "Green", " Two ", "No, keep going", "NO", "A bus"]


@pytest.fixture(scope="module")
def tiny_judge(tmp_path_factory):
    """A random BERT-like single-logit classifier and word tokenizer, saved and reloaded."""
    words = " ".join(QUESTIONS + PREDICTIONS + [r for refs in REFERENCES for r in refs])
    vocab = set(words.lower().replace("?", " ? ").replace(",", " , ").replace(".", " . ").split())
    vocab |= {"question", "answer", "student", ":"}
    tokenizer = build_word_tokenizer(vocab, extra_special_tokens=("[CLS]",), cls_token="[CLS]")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=128,
        num_labels=1,
        initializer_range=0.5,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = BertForSequenceClassification(config).eval()
    # Centre the bias between the middle two maximum logits so that decisions go both ways.
    judge = LingoJudge(tokenizer, model)
    middle = sorted(judge.max_logits(QUESTIONS, REFERENCES, PREDICTIONS))[2:4]
    with torch.no_grad():
        model.classifier.bias -= sum(middle) / 2
    folder = tmp_path_factory.mktemp("judge")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return LingoJudge.load(folder, batch_size=3), model, tokenizer


def test_judge_matches_one_by_one_logits(tiny_judge):
    judge, model, tokenizer = tiny_judge
    expected_logits, expected = [], []
    with torch.no_grad():
        for question, references, prediction in zip(QUESTIONS, REFERENCES, PREDICTIONS):
            logits = []
            for reference in references:
                text = (
                    f"[CLS]\nQuestion: {question}\nAnswer: {reference.lower().strip()}"
                    f"\nStudent: {prediction.lower().strip()}"
                )
                logits.append(model(**tokenizer(text, return_tensors="pt")).logits[0, 0].item())
            expected_logits.append(max(logits))
            expected.append(max(logits) > 0)
    assert judge.max_logits(QUESTIONS, REFERENCES, PREDICTIONS) == pytest.approx(expected_logits, abs=1e-5)
    decisions = judge.score(QUESTIONS, REFERENCES, PREDICTIONS)
    assert decisions == expected
    assert True in decisions and False in decisions


def test_judge_preprocessing(tiny_judge):
    judge, _, _ = tiny_judge
    assert judge.input_text("Is it?", " Yes ", "NO\n") == "[CLS]\nQuestion: Is it?\nAnswer: yes\nStudent: no"
    assert judge.input_text("Is it?", " Yes ", "NO", preprocess=False) == (
        "[CLS]\nQuestion: Is it?\nAnswer:  Yes \nStudent: NO"
    )


def test_judge_input_errors(tiny_judge):
    judge, _, _ = tiny_judge
    with pytest.raises(ValueError, match="one of each"):
        judge.score(QUESTIONS, REFERENCES[:2], PREDICTIONS)
    with pytest.raises(JudgeInputError, match="question 0"):
        judge.score(QUESTIONS[:1], [[]], PREDICTIONS[:1])


def test_judge_unavailable_names_the_path(tmp_path):
    missing = tmp_path / "no-judge-here"
    with pytest.raises(JudgeUnavailable, match="no-judge-here"):
        LingoJudge.load(missing)
    with pytest.raises(JudgeUnavailable, match=str(tmp_path)):
        LingoJudge.load(tmp_path)  # exists, but holds no model
