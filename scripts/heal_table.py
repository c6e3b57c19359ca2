"""Token healing side by side: plain decoding, the constrain family's one-token healing, exact healing
(`dl.bytes.heal`) and Hugging Face's `generate(token_healing=True)`, same model, same prompts, greedy.

Lundberg (2023), "The Art of Prompt Design: Prompt Boundaries and Token Healing" (the one-token fix
that both `token_healing=True` here and Hugging Face implement); Phan et al. (2024) and Hayase et al.
(2025) for the exact byte-level version (decodelab/bytes/heal.py).

    PYTHONPATH=. python scripts/heal_table.py --model smollm2-135m --weights fp32 --tokens 8 \\
        --out docs/bench/bytes/heal_table.json

Prints a Markdown table: what each method writes after the prompt (the prompt ends inside a word, a
URL or after a space). Hugging Face strips the prompt and re-tokenizes it before healing; where its
output does not start with the whole prompt, the characters it dropped are shown as [-N].
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

import decodelab as dl
from decodelab.sampling.options import bounded_number

PROMPTS = [
    "def fibonacci(n):\n    retu",
    "import num",
    "The capital of Fra",
    "The quick brown fox jumps over the la",
    "The capital of France is ",
    "Visit our website at https://www.goo",
    "for i in ran",
    "She opened the door and wal",
    "x = [1, 2, 3]\nprint(le",
    "The meeting is scheduled for Wednes",
    "Ingredients: flour, sugar, eggs, and but",
    '<a href="http',
]


def _after_prompt(full: str, prompt: str) -> str:
    """What `full` adds after `prompt`; characters of the prompt it did not keep shown as [-N]."""
    common = 0
    while common < min(len(full), len(prompt)) and full[common] == prompt[common]:
        common += 1
    dropped = len(prompt) - common
    return (f"[-{dropped}]" if dropped else "") + full[common:]


def hf_healed(lm: dl.LM, prompt: str, tokens: int) -> str:
    """Hugging Face's token healing (`generate(token_healing=True, tokenizer=...)`), greedy."""
    tok = lm.tokenizer
    ids = torch.tensor([tok(prompt)["input_ids"]])
    pad = tok.pad_token_id if tok.pad_token_id is not None else (lm.eos_token_ids or [0])[0]
    if tok.pad_token_id is None:
        tok.pad_token_id = pad
    with torch.no_grad():
        out = lm.model.generate(ids, attention_mask=torch.ones_like(ids), token_healing=True, tokenizer=tok,
                                max_new_tokens=tokens, do_sample=False, pad_token_id=pad)
    return _after_prompt(tok.decode(out[0], skip_special_tokens=True), prompt)


def row(lm: dl.LM, prompt: str, tokens: int) -> dict:
    plain = dl.generate(lm, prompt, chat=False, max_new_tokens=tokens, temperature=0)
    old = dl.generate(lm, prompt, chat=False, max_new_tokens=tokens, temperature=0, token_healing=True,
                      regex="(.|\n)*")
    exact = dl.bytes.heal(lm, prompt, max_new_tokens=tokens, temperature=0)
    try:
        hf = hf_healed(lm, prompt, tokens)
    except Exception as exc:  # a library failure is a result to report, not a crash of the table
        hf = f"(failed: {type(exc).__name__}: {exc})"[:120]
    return {"prompt": prompt, "plain": plain.text, "token_healing": old.text, "exact": exact.text, "hf": hf}


def markdown(rows: list[dict]) -> str:
    def cell(text: str) -> str:
        return "`" + text.replace("\n", "\\n").replace("|", "\\|").replace("`", "'") + "`"

    lines = ["| prompt | plain | token_healing=True | exact (dl.bytes.heal) | HF token_healing |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append("| " + " | ".join(cell(r[k]) for k in ("prompt", "plain", "token_healing", "exact", "hf")) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--weights", default="fp32")
    parser.add_argument("--tokens", type=bounded_number(int, 1, 256, "--tokens"), default=8)
    parser.add_argument("--prompts", default=None, help="a JSON file with a list of prompts (default: the built-in list)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    prompts = json.loads(Path(args.prompts).read_text()) if args.prompts else PROMPTS
    lm = dl.load(args.model, weights=args.weights) if not args.model.startswith("tiny-random") else dl.load(args.model)
    rows = [row(lm, p, args.tokens) for p in prompts]
    table = markdown(rows)
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        command = "python scripts/heal_table.py " + " ".join(sys.argv[1:] if argv is None else argv)
        Path(args.out).write_text(json.dumps({"model": args.model, "weights": args.weights, "tokens": args.tokens,
                                              "rows": rows, "command": command}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
