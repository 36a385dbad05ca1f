"""Command-line help (#12.7): every argument of every command has help text with its default,
in plain text (no reStructuredText markup)."""

import argparse
import os
import re
import subprocess
import sys

import pytest

from conftest import BIN
from ltpa.cli import HelpFormatter, build_parser

# reStructuredText roles and literals, as docstrings write them
RST = re.compile(r"``|:(ref|func|class|meth|mod|attr|data|obj|doc|term):`")


def _subcommands():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, sub.choices


def _help(*cmd) -> str:
    # wide enough that argparse does not wrap: each help text stays on one line
    env = dict(os.environ, COLUMNS="1000")
    proc = subprocess.run([*cmd, "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout


def _check(parser, text):
    assert not RST.search(text), f"reStructuredText markup in --help:\n{text}"
    flat = " ".join(text.split())
    formatter = HelpFormatter(parser.prog, width=1000)
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        name = action.option_strings[0] if action.option_strings else action.dest
        assert action.help, f"{parser.prog} {name}: no help text"
        for opt in action.option_strings:
            assert opt in text, f"{parser.prog}: {opt} not in --help"
        shown = " ".join(formatter._expand_help(action).split())
        assert shown in flat, f"{parser.prog} {name}: {shown!r} not in --help"
        if action.option_strings and not isinstance(action, argparse._VersionAction):
            assert "default" in shown or "required" in shown, \
                f"{parser.prog} {name}: its default is not in --help: {shown!r}"


def test_ltpa_help():
    parser, _ = _subcommands()
    text = _help(str(BIN / "ltpa"))
    _check(parser, text)
    for name in _subcommands()[1]:
        assert name in text


@pytest.mark.parametrize("name", sorted(_subcommands()[1]))
def test_every_subcommand_documents_every_argument_and_its_default(name):
    sub = _subcommands()[1][name]
    assert sub.description, f"ltpa {name}: no description"
    _check(sub, _help(str(BIN / "ltpa"), name))


def test_ltpa_job_and_job_server_help():
    from ltpa.jobs import client
    from ltpa.jobs import server as jobserver

    _check(client.build_parser(), _help(str(BIN / "ltpa-job")))
    _check(jobserver.build_parser(), _help(sys.executable, "-m", "ltpa.jobs.server"))
