"""The command line's shape: one small registration per command, next to its handler."""

import argparse
import ast
import inspect
from pathlib import Path

from autodata import cli

# Commands that read the world: its seeds, dev/test questions, retriever or index.
WORLD_COMMANDS = {
    "demo",
    "index build",
    "retriever serve",
    "search",
    "data check",
    "synthesize",
    "eval",
    "proxy",
    "study run",
    "prompts optimize",
    "export hf",
}


def leaves(parser: argparse.ArgumentParser, prefix: str = ""):
    """(name, parser) of every leaf command, e.g. ("study run", ...)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                full = f"{prefix} {name}".strip()
                nested = any(isinstance(a, argparse._SubParsersAction) for a in sub._actions)
                yield from leaves(sub, full) if nested else [(full, sub)]


def test_every_command_has_a_handler_and_only_world_readers_take_world():
    found = dict(leaves(cli.build_parser()))
    assert set(found) == {c.name for c in cli.COMMANDS} and len(found) == len(cli.COMMANDS) == 25
    for name, parser in found.items():
        assert parser.get_default("run") is not None, name
        options = {o for a in parser._actions for o in a.option_strings}
        assert ("--world" in options) == (name in WORLD_COMMANDS), name


def test_arguments_sit_directly_above_their_handler_and_functions_stay_short():
    source = Path(inspect.getsourcefile(cli)).read_text(encoding="utf-8")
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            assert node.end_lineno - start + 1 <= 60, node.name
    top = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    for registered in cli.COMMANDS:
        handler = registered.run.__name__
        if registered.add_arguments is not None:
            args_at, handler_at = top.index(registered.add_arguments.__name__), top.index(handler)
            assert 0 < handler_at - args_at <= 2, handler  # at most one helper of the arguments in between
