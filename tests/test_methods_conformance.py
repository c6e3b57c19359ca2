"""Conformance of every registered method, parametrised over the registry.

Each method (and any method a test module registers) is checked to:
- appear on every surface with the same option names: `decodelab methods --json`, the CLI's
  generate flags, the server's request schema and its method list;
- give the same tokens from Python, the CLI and the server for the same request;
- reject an out-of-range value of every bounded option, and unknown options, with a typed error
  (Python), a one-line error and exit 2 (CLI), and a 400 (HTTP);
- if lossless: match its reference greedily token for token, and sample its reference's exact law
  (chi-square against enumeration) — with a power check that the same samples are rejected
  against a law at another temperature.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from oracle import chi_square_pvalue, enumerate_laws, exact_continuations, sample_continuations
from surfaces import cli_args, python_keywords, server_body

import decodelab as dl
from decodelab.cli import build_parser
from decodelab.cli import main as cli_main
from decodelab.constrain import compile_grammar
from decodelab.decoding.method import Capabilities, Method, Parts, Slot, register, register_slot, unregister
from decodelab.sampling.options import option
from decodelab.speculative.verifiers import RejectionSampling

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from decodelab.server import ServerConfig, create_app  # noqa: E402

PASS_LEVEL = 1e-4
FAIL_LEVEL = 1e-6
PROMPT = [1, 4, 5, 6, 7]


# ------------------------------------------------------------------ a method defined in this module
class RepeatLast:
    """Drafts the last token k times (deterministic drafts, verified by rejection sampling)."""

    def __init__(self, k: int):
        self.k = k
        self.verifier = RejectionSampling()

    def start(self, state):
        pass

    def propose(self, state, budget):
        from decodelab.decoding.protocols import Proposal

        k = max(0, min(self.k, max(budget)))
        last = torch.tensor([state.context(b)[-1] for b in range(len(state.active))])
        tokens = last[:, None].repeat(1, k)
        lengths = torch.tensor([min(k, budget[b]) for b in range(len(state.active))])
        return Proposal(tokens, lengths)

    def accepted(self, state, proposal, verdict):
        pass

    def select_rows(self, rows):
        pass


@dataclass
class RepeatLastOptions:
    k: int = option(2, "draft tokens per step", ge=1, le=8)


@dataclass
class FirstOfOptions:
    first_of: int = option(1, "sample this many rows per prompt and return the first (test policy)", ge=1, le=8)


class FirstOf:
    streams = False

    def __init__(self, n):
        self.rows_per_prompt = n

    def outputs(self, state, rows):
        return [rows[state.groups.index(g)] for g in range(max(state.groups) + 1)]


@dataclass
class MarginOptions:
    test_margin: bool = option(False, "add a 'margin' record column: top-1 minus top-2 log-probability (test)")


class MarginObserver:
    """An observer: one record column from the logits each token was chosen from."""

    name = "margin"

    def columns(self, state, b, logprobs, token, source):
        top = torch.topk(logprobs, 2).values
        return {"margin": float(top[0] - top[1])}


register_slot(Slot("test-scores", "test observers: extra record columns", flat=True, requires="test_margin=true"))

# registered at import, so that the parametrisations below see them like any other method
TEST_METHODS = [
    Method("test-margin", "test-scores", "record column 'margin' (test observer)", "none", MarginOptions,
           lambda ctx, o: Parts(observers=[MarginObserver()]),
           Capabilities(lossless=True, composes_with=frozenset({"*"})),
           selects=lambda v: bool(v.get("test_margin")), example={"test_margin": True}),
    Method("test-repeat-last", "speculative", "drafts the last token again (test)", "none", RepeatLastOptions,
           lambda ctx, o: Parts(proposer=RepeatLast(o.k), verifier=RejectionSampling()),
           Capabilities(lossless=True, batchable=False, composes_with=frozenset({"constraint"})), example={"k": 3}),
    Method("test-first-of", "policy", "first of n rows (test)", "none", FirstOfOptions,
           lambda ctx, o: Parts(row_policy=FirstOf(o.first_of)), Capabilities(lossless=False, streams=False),
           selects=lambda v: (v.get("first_of") or 1) > 1, example={"first_of": 2}, rows_option="first_of",
           rows_per_prompt=lambda o: o.first_of),
]
for _m in TEST_METHODS:
    register(_m)


@pytest.fixture(scope="module", autouse=True)
def test_methods():
    """The two methods defined here reach every surface with no other file touched; they leave
    the registry when this module's tests are done."""
    yield
    for m in TEST_METHODS:
        unregister(m.name)


METHODS = [m.name for m in dl.methods()]


_BY_NAME = {m.name: m for m in dl.methods()}


def _method(name: str) -> Method:
    return _BY_NAME[name]


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def target():
    return dl.load("tiny-random")  # what the CLI's --model tiny-random loads


@pytest.fixture(scope="module")
def client(target, test_methods):
    app = create_app({"tiny-random": target, "draft": dl.load("tiny-random")},
                     ServerConfig(max_rows_per_request=64, max_batch=64))
    with TestClient(app) as c:
        yield c


def _python_keywords(m: Method, draft) -> dict:
    return python_keywords(m, m.example, draft)


def _sampling(m: Method) -> dict:
    return {"temperature": 1.0, "seed": 3} if m.capabilities.needs_sampling else {"temperature": 0}


_cli_args = cli_args
_server_body = server_body


# ------------------------------------------------------------------ surfaces
@pytest.mark.parametrize("name", METHODS)
def test_method_is_listed_on_every_surface_with_the_same_option_names(name, client, capsys):
    m = _method(name)
    assert cli_main(["methods", "--json"]) == 0
    listed = {d["name"]: d for d in json.loads(capsys.readouterr().out)}
    assert [o["name"] for o in listed[name]["options"]] == m.option_names()
    served = {d["name"]: d for d in client.get("/v1/decodelab/methods").json()}
    assert [o["name"] for o in served[name]["options"]] == m.option_names()
    fields = client.get("/openapi.json").json()["components"]["schemas"]["CompletionRequest"]["properties"]
    gen = build_parser()._subparsers._group_actions[0].choices["generate"]
    flags = {a.dest for a in gen._actions}
    from decodelab.decoding.method import slot

    s = slot(m.slot)
    if s.flat:
        for opt in m.option_specs():
            assert opt.name in fields and opt.name in flags
    else:
        assert s.selector in fields and s.selector in flags


@pytest.mark.parametrize("name", METHODS)
def test_same_request_gives_the_same_tokens_from_python_cli_and_server(name, target, client, capsys):
    m = _method(name)
    sampling = _sampling(m)
    out = dl.generate(target, "ab", chat=False, max_new_tokens=6, **sampling, **_python_keywords(m, target))
    cli = ["generate", "ab", "--model", "tiny-random", "--no-chat", "--json", "--max-new-tokens", "6",
           "--temperature", str(sampling["temperature"])] + (["--seed", "3"] if "seed" in sampling else [])
    assert cli_main(cli + _cli_args(m, m.example)) == 0
    assert json.loads(capsys.readouterr().out)["token_ids"] == out.token_ids
    body = {"model": "tiny-random", "prompt": "ab", "max_tokens": 6, "logprobs": 0, **sampling,
            **_server_body(m, m.example)}
    response = client.post("/v1/completions", json=body)
    assert response.status_code == 200, response.json()
    choice = response.json()["choices"][0]
    assert choice["text"] == out.text


def test_plain_greedy_and_seeded_sampling_agree_across_surfaces(target, client, capsys):
    for sampling, flags in (({"temperature": 0}, ["--temperature", "0"]),
                            ({"temperature": 0.9, "top_k": 20, "seed": 11},
                             ["--temperature", "0.9", "--top-k", "20", "--seed", "11"])):
        out = dl.generate(target, "the cat", chat=False, max_new_tokens=8, **sampling)
        assert cli_main(["generate", "the cat", "--model", "tiny-random", "--no-chat", "--json",
                         "--max-new-tokens", "8"] + flags) == 0
        assert json.loads(capsys.readouterr().out)["token_ids"] == out.token_ids
        r = client.post("/v1/completions", json={"prompt": "the cat", "max_tokens": 8, **sampling}).json()
        assert r["choices"][0]["text"] == out.text


def _bounded(name: str) -> list[tuple[str, str, object]]:
    m = _method(name)
    cases = []
    for spec in m.option_specs():
        if spec.kind in ("int", "float") and spec.le is not None:
            cases.append((name, spec.name, int(spec.le) + 1 if spec.kind == "int" else float(spec.le) * 2 + 1))
        elif spec.kind in ("int", "float") and spec.lt is not None:
            cases.append((name, spec.name, spec.lt + 1))
    return cases


BOUNDED = [case for name in METHODS for case in _bounded(name)]


@pytest.mark.parametrize(("name", "option_name", "value"), BOUNDED)
def test_every_bounded_option_rejects_a_value_out_of_range(name, option_name, value, target, client, capsys):
    m = _method(name)
    options = {**m.example, option_name: value}
    with pytest.raises(dl.InvalidOption):
        dl.generate(target, "ab", chat=False, max_new_tokens=2, **_sampling(m),
                    **m.keywords({k: (target if k == "draft" else v) for k, v in options.items()}))
    code = cli_main(["generate", "ab", "--model", "tiny-random", "--no-chat", "--max-new-tokens", "2",
                     "--temperature", "1", "--seed", "1"] + _cli_args(m, options))
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1
    r = client.post("/v1/completions", json={"prompt": "ab", "max_tokens": 2, "temperature": 1, "seed": 1,
                                             **_server_body(m, options)})
    assert r.status_code == 400 and "error" in r.json()


@pytest.mark.parametrize("name", [n for n in METHODS if not _method(n).option_names() or n])
def test_unknown_option_is_rejected(name, target, client):
    m = _method(name)
    from decodelab.decoding.method import slot

    s = slot(m.slot)
    if s.flat:
        bad = {**m.example, "no_such_option": 1}
        with pytest.raises(dl.InvalidOption):
            dl.generate(target, "ab", max_new_tokens=2, **_sampling(m), **bad)
        assert client.post("/v1/completions", json={"prompt": "ab", **bad}).status_code == 400
        return
    bad = m.keywords({**{k: (target if k == "draft" else v) for k, v in m.example.items()}, "no_such_option": 1})
    with pytest.raises(dl.InvalidOption, match="no_such_option"):
        dl.generate(target, "ab", max_new_tokens=2, **_sampling(m), **bad)
    body = _server_body(m, {**m.example, "no_such_option": 1})
    r = client.post("/v1/completions", json={"prompt": "ab", "max_tokens": 2, **_sampling(m), **body})
    assert r.status_code == 400


# ------------------------------------------------------------------ lossless methods
@pytest.fixture(scope="module")
def peaky():
    return dl.load("tiny-random", vocab_size=16, init_std=0.3, seed=1)


@pytest.fixture(scope="module")
def peaky_draft():
    return dl.load("tiny-random", vocab_size=16, init_std=0.3, seed=5)


LOSSLESS = [n for n in METHODS if _method(n).capabilities.lossless]


def _reference(m: Method) -> dict:
    """What a lossless method must reproduce: plain decoding, or (constraints) the masked law."""
    return {"regex": m.example["regex"]} if m.slot == "constraint" else {}


@pytest.mark.parametrize("name", LOSSLESS)
def test_lossless_method_matches_its_reference_greedily(name, peaky, peaky_draft):
    m = _method(name)
    keywords = _python_keywords(m, peaky_draft)
    for prompt in (PROMPT, [1, 9, 9, 9, 4], [1, 5]):
        ref = dl.generate(peaky, prompt, max_new_tokens=10, temperature=0, **_reference(m))
        got = dl.generate(peaky, prompt, max_new_tokens=10, temperature=0, **keywords)
        assert got.token_ids == ref.token_ids, (name, prompt)


@pytest.mark.parametrize("name", LOSSLESS)
def test_lossless_method_samples_the_exact_law(name, peaky, peaky_draft):
    m = _method(name)
    sampler = {"temperature": 0.9, "top_k": 8}
    if m.slot == "constraint":
        # no truncation here: AWRS truncates then constrains, masking constrains then truncates
        # (decodelab/constrain/awrs.py); without truncation both are the masked law
        sampler = {"temperature": 0.9}
        grammar = compile_grammar(peaky, regex=m.example["regex"])
        exact = enumerate_laws(peaky, PROMPT, grammar, 2, keep_incomplete=True, **sampler)[0]
        control = enumerate_laws(peaky, PROMPT, grammar, 2, keep_incomplete=True, temperature=1.6)[0]
    else:
        exact = exact_continuations(peaky, PROMPT, 2, **sampler)
        control = exact_continuations(peaky, PROMPT, 2, temperature=1.6, top_k=8)
    counts = sample_continuations(peaky, PROMPT, 2, 4000, seed=17, **sampler, **_python_keywords(m, peaky_draft))
    assert chi_square_pvalue(counts, exact) > PASS_LEVEL
    # power: the same samples are rejected against a law that differs as little as a wrong temperature
    assert chi_square_pvalue(counts, control) < FAIL_LEVEL


def test_observer_adds_record_columns_on_every_surface(target, client, capsys):
    out = dl.generate(target, "ab", chat=False, max_new_tokens=5, temperature=0, test_margin=True)
    for record in out.records:
        top = record.top  # the default observer's columns are still there
        assert abs(record.extra["margin"] - (top[0][2] - top[1][2])) < 1e-5
    # composes with other methods: the column follows speculative drafts too
    spec = dl.generate(target, "ab", chat=False, max_new_tokens=5, temperature=0, test_margin=True,
                       speculative="prompt-lookup")
    assert [r.extra["margin"] for r in spec.records] == pytest.approx([r.extra["margin"] for r in out.records],
                                                                       abs=1e-4)
    assert cli_main(["generate", "ab", "--model", "tiny-random", "--no-chat", "--json", "--max-new-tokens", "5",
                     "--temperature", "0", "--test-margin"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert [r["extra"]["margin"] for r in cli["records"]] == pytest.approx([r.extra["margin"] for r in out.records])
    r = client.post("/v1/completions", json={"prompt": "ab", "max_tokens": 5, "temperature": 0, "test_margin": True,
                                             "records": True}).json()
    assert [x["extra"]["margin"] for x in r["choices"][0]["records"]] == pytest.approx(
        [rec.extra["margin"] for rec in out.records], abs=1e-5)
