"""CCP, SAR and UQAC: each score's defining property, with stub judges and similarities."""

from __future__ import annotations

import math

import pytest
import torch

import decodelab as dl
from decodelab.uncertainty.claims import ccp, ccp_word, split_claims
from decodelab.uncertainty.sar import sar, sentence_sar, token_sar
from decodelab.uncertainty.uqac import attention_chain, uqac

PROMPT, OUTPUT = [1, 5, 6], [7, 8, 9, 10]


@pytest.fixture(scope="module")
def lm():
    return dl.load("tiny-random", vocab_size=16, init_std=0.4, seed=2)


def differ(original, alternatives):
    return ["contradict"] * len(alternatives)


def agree(original, alternatives):
    return ["entail"] * len(alternatives)


def test_ccp_is_the_token_probability_when_every_alternative_differs_in_meaning(lm):
    # alternatives = the whole vocabulary, so the denominator is the full probability mass
    r = ccp(lm, PROMPT, OUTPUT, judge=differ, alternatives=16)
    probs = [math.exp(x) for x in dl.score(lm, PROMPT, OUTPUT).column("logprob")]
    assert [t["ccp"] for t in r.tokens] == pytest.approx(probs, rel=1e-4)
    assert r.claims[0]["ccp"] == pytest.approx(math.prod(probs), rel=1e-3)


def test_ccp_is_one_when_all_alternatives_agree(lm):
    r = ccp(lm, PROMPT, OUTPUT, judge=agree, alternatives=5)
    assert all(t["ccp"] == 1.0 for t in r.tokens) and r.claims[0]["ccp"] == 1.0


def test_ccp_counts_only_the_agreeing_mass_and_ignores_neutral():
    assert ccp_word([0.5, 0.3, 0.2], ["entail", "contradict", "entail"]) == pytest.approx(0.7)
    assert ccp_word([0.5, 0.3, 0.2], ["entail", "neutral", "contradict"]) == pytest.approx(0.5 / 0.7)
    assert ccp_word([0.5, 0.3], ["neutral", "neutral"]) == 1.0


def test_claims_are_sentences_and_the_judge_is_checked(lm):
    assert split_claims(["A", " b", ".", " C", "!", " d"]) == [(0, 3), (3, 5), (5, 6)]
    with pytest.raises(dl.InvalidOption):
        ccp(lm, PROMPT, OUTPUT, judge=lambda o, a: ["maybe"] * len(a))
    with pytest.raises(dl.InvalidOption):
        ccp(lm, PROMPT, OUTPUT, judge=agree, alternatives=0)


def test_token_sar_weights_the_nll_by_relevance(lm):
    logprobs = dl.score(lm, PROMPT, OUTPUT).column("logprob")
    flat = token_sar(lm, PROMPT, OUTPUT, similarity=lambda t, o: [0.3] * len(o))
    assert flat.value == pytest.approx(-sum(logprobs) / len(logprobs), rel=1e-5)  # equal relevance: mean NLL
    text = lm.decode(OUTPUT)
    only_second = lm.decode(OUTPUT[:1] + OUTPUT[2:])  # removing token 1 changes the meaning, others do not

    def one_matters(t, others):
        return [0.0 if o == only_second else 1.0 for o in others]

    assert text != only_second
    r = token_sar(lm, PROMPT, OUTPUT, similarity=one_matters)
    assert r.relevance == [0.0, 1.0, 0.0, 0.0] and r.value == pytest.approx(-logprobs[1], rel=1e-5)


def test_sentence_sar_takes_negative_cosines_as_no_relevance_and_underflow_as_infinite():
    """An embedder's cosine can be below 0 and a long answer's probability can underflow: neither may
    break the log (both happened on SmolLM2 answers)."""
    p = [0.2, 0.3, 1e-9]
    assert sentence_sar(p, [[1, -0.4, -0.9]] * 3, 0.001) == sentence_sar(p, [[1, 0, 0]] * 3, 0.001)
    assert sentence_sar([0.0, 0.0], [[1, 0], [0, 1]], 0.001) == [math.inf, math.inf]


def test_sentence_sar_rewards_agreement_between_samples():
    p = [0.2, 0.1, 0.05]
    alone = sentence_sar(p, [[1, 0, 0], [0, 1, 0], [0, 0, 1]], temperature=1.0)
    assert alone == pytest.approx([-math.log(x) for x in p])
    together = sentence_sar(p, [[1, 1, 1]] * 3, temperature=1.0)
    assert together == pytest.approx([-math.log(sum(p))] * 3)


def test_sar_over_samples_uses_token_sar_probabilities(lm):
    samples = [OUTPUT, [7, 8, 11], [12, 13]]
    r = sar(lm, PROMPT, samples, similarity=lambda t, o: [0.0] * len(o), temperature=1.0)
    assert r.per_sample == pytest.approx([t.value for t in r.token_sar], rel=1e-6)  # no agreement: -log p_i
    with pytest.raises(dl.InvalidOption):
        sar(lm, PROMPT, [OUTPUT], similarity=lambda t, o: [0.0] * len(o))


def test_attention_chain_follows_attention_back_from_the_answer():
    attention = torch.zeros(5, 5)
    attention[4, 2] = 0.9  # the answer (4) reads 2
    attention[4, 0] = 0.1
    attention[2, 1] = 1.0  # 2 reads 1
    attention[3, 0] = 1.0  # 3 is read by nothing
    assert attention_chain(attention, [4], threshold=0.5, depth=1) == [2, 4]
    assert attention_chain(attention, [4], threshold=0.5, depth=3) == [1, 2, 4]
    assert attention_chain(attention, [4], threshold=0.05, depth=3) == [0, 1, 2, 4]


def test_uqac_scores_the_chain_tokens(lm):
    attention_before = lm.model.config._attn_implementation
    logprobs = dl.score(lm, PROMPT, OUTPUT).column("logprob")
    only = uqac(lm, PROMPT, OUTPUT, answer_tokens=1, threshold=2.0)
    assert only.chain == [3] and only.value == pytest.approx(-logprobs[3], rel=1e-4)
    everything = uqac(lm, PROMPT, OUTPUT, answer_tokens=1, threshold=0.0)
    assert everything.chain == [0, 1, 2, 3]
    assert everything.value == pytest.approx(-sum(logprobs) / 4, rel=1e-4)
    assert lm.model.config._attn_implementation == attention_before != "eager"  # restored after the eager forward


def test_auroc_and_prr_on_known_rankings():
    from decodelab.uncertainty.metrics import auroc, prr

    wrong = [True, False, True, False, False]
    perfect = [0.9, 0.1, 0.8, 0.2, 0.3]
    assert auroc(perfect, wrong) == 1.0 and prr(perfect, wrong) == pytest.approx(1.0)
    reversed_ = [-u for u in perfect]
    assert auroc(reversed_, wrong) == 0.0 and prr(reversed_, wrong) < 0
    assert auroc([0.5] * 5, wrong) == 0.5


def test_question_set_checks_its_own_answers():
    from decodelab.uncertainty.questions import is_correct, questions

    qs = questions(40, seed=1)
    assert len({q.text for q in qs}) == 40 and {q.kind for q in qs} == {"arithmetic", "date", "units", "fact"}
    for q in qs:
        assert is_correct(q, f"The answer is {q.answer}.")
        assert not is_correct(q, "I do not know")
    weekday = next(q for q in questions(80, seed=1) if "day of the week" in q.text)
    import datetime

    assert weekday.answer == datetime.date.fromisoformat(weekday.text.split()[-1][:-1]).strftime("%A")
