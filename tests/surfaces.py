"""How one request reads on each surface: Python keywords, CLI flags and a server body.

Shared by the conformance tests (every method gives the same answer everywhere) and the hostile
input tests (every method rejects bad values everywhere with a typed error)."""

from __future__ import annotations

from typing import Any

from decodelab.decoding.method import Method, slot


def python_keywords(m: Method, options: dict, draft: Any) -> dict:
    """`dl.generate` keywords; a `draft` option takes the given model."""
    return m.keywords({k: (draft if k == "draft" else v) for k, v in options.items()})


def cli_value(value: Any) -> str:
    """What a user types for `value` (an integer too long for str(), beyond 4300 digits, is typed
    as its digits all the same)."""
    if isinstance(value, (tuple, list)):
        return ",".join(map(cli_value, value))
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int) and value.bit_length() > 14_000:
        return ("-" if value < 0 else "") + "9" * (value.bit_length() * 3 // 10)
    return str(value)


def cli_args(m: Method, options: dict) -> list[str]:
    """`decodelab generate` flags; a `draft` option names the tiny-random model."""
    s = slot(m.slot)
    args: list[str] = []
    if s.flat:
        for k, v in options.items():
            flag = "--" + k.replace("_", "-")
            if isinstance(v, bool):
                args.append(flag if v else "--no-" + k.replace("_", "-"))
            else:
                args += [flag, cli_value(v)]
        return args
    args += ["--" + s.selector.replace("_", "-"), m.name]
    for k, v in options.items():
        if k == "draft":
            args += ["--draft", "tiny-random"]
        else:
            args += [f"--{m.slot}-option", f"{k}={cli_value(v)}"]
    return args


def server_body(m: Method, options: dict) -> dict:
    """Request fields; a `draft` option names the served model "draft"."""
    return m.keywords({k: ("draft" if k == "draft" else list(v) if isinstance(v, tuple) else v)
                       for k, v in options.items()})


def run_cli(capsys: Any, *argv: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `decodelab ARGV...` run in-process; argparse's refusals
    (SystemExit) count as an exit status."""
    from decodelab.cli import main

    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err
