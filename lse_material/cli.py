"""The ``lse-material`` console script, generated from the verbs' functions.

A verb is a Python function declared as an entry point of the group ``lse_material.verbs``
(pyproject.toml, ``[project.entry-points."lse_material.verbs"]``). The entry point's name
places it: ``train.schlogl`` is ``lse-material train schlogl``, a name without a dot
(``fit-1d``) is a top-level verb. The core never imports an application by name; a package
that declares entry points in this group adds verbs.

Each verb's parser is built from the function itself, so an option cannot drift from it:

- a keyword-only parameter becomes ``--name`` (``finetune_epochs`` -> ``--finetune-epochs``),
  required when it has no default; a positional parameter becomes a positional argument;
- the type comes from the annotation: ``bool`` -> ``--flag/--no-flag``; ``int``, ``float``,
  ``str``, ``Path``; ``X | None`` -> X (default None; ``str | Path`` -> str);
  ``tuple[X, ...]`` -> ``--name a b``; ``list[X]`` or ``Sequence[X]`` -> repeatable
  (``--name a --name b``); ``Literal[...]`` -> choices;
- the defaults are the function's defaults;
- the help texts are the descriptions in the docstring's NumPy-style "Parameters" section,
  the verb's help is the docstring's first line and its description the text before the first
  section.

Only the module of the verb that runs is imported; listings read the other verbs' one-line
help from their source (``verb_summary``), so ``lse-material train schlogl`` and
``lse-material --help`` do not import the finite-element cases or DOLFINx. Tests and
notebooks call the functions, not a subprocess.
"""

from __future__ import annotations

import argparse
import ast
import collections.abc
import importlib.metadata
import importlib.util
import inspect
import os
import sys
import time
import traceback
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NamedTuple

VERB_GROUP = "lse_material.verbs"
GROUPS = {
    "train": "train a model from one of the data models",
    "simulate": "run a finite-element case (serial, or under mpirun)",
    "bench": "benchmarks: side-by-side timings written as JSON",
}
_SCALARS = (bool, int, float, str, Path)


class Verb(NamedTuple):
    """One verb: its entry-point name (``group.what`` or ``what``) and its function."""

    name: str
    function: Callable[..., Any]


class Docstring(NamedTuple):
    """The parts of a NumPy-style docstring the CLI uses."""

    summary: str  # the first line
    description: str  # the text before the first section
    parameters: dict[str, str]  # parameter name -> description (one line)


def _points() -> list[importlib.metadata.EntryPoint]:
    return sorted(importlib.metadata.entry_points(group=VERB_GROUP), key=lambda p: p.name)


def verbs() -> list[Verb]:
    """All installed verbs, sorted by name (imports every verb's module)."""
    return [Verb(p.name, p.load()) for p in _points()]


def verb_summary(point: importlib.metadata.EntryPoint) -> str:
    """A verb's one-line help, read from its module's source without importing the module.

    Listings (``lse-material --help``, ``lse-material train``) need only these lines, so they
    do not import every application (nor DOLFINx). Falls back to importing the function.
    """
    module, _, name = point.value.partition(":")
    spec = importlib.util.find_spec(module)
    if spec is not None and spec.origin and spec.origin.endswith(".py"):
        for node in ast.parse(Path(spec.origin).read_text(encoding="utf-8")).body:
            if isinstance(node, ast.FunctionDef) and node.name == name:
                return (ast.get_docstring(node) or "").split("\n")[0]
    return parse_docstring(point.load()).summary


def _selected(argv: list[str], names: set[str]) -> str | None:
    """The name of the verb ``argv`` runs, or None (a listing, ``--help`` or an error)."""
    words = [a for a in argv if not a.startswith("-")]
    if words and words[0] in names:
        return words[0]
    if len(words) > 1 and f"{words[0]}.{words[1]}" in names:
        return f"{words[0]}.{words[1]}"
    return None


def _is_underline(line: str) -> bool:
    return bool(line.strip()) and set(line.strip()) == {"-"}


def parse_docstring(function: Callable[..., Any]) -> Docstring:
    """Split ``function``'s docstring into summary, description and parameter descriptions.

    A "Parameters" section lists ``name`` or ``name : type`` (or ``a, b : type``) at the
    section's indentation, followed by the description indented below it.
    """
    lines = (inspect.getdoc(function) or "").splitlines()
    headers = [i for i in range(len(lines) - 1) if _is_underline(lines[i + 1]) and lines[i]]
    end = headers[0] if headers else len(lines)
    description = "\n".join(lines[:end]).strip()
    parameters: dict[str, str] = {}
    for h, start in enumerate(headers):
        if lines[start].strip() != "Parameters":
            continue
        stop = headers[h + 1] if h + 1 < len(headers) else len(lines)
        names: list[str] = []
        for line in lines[start + 2 : stop]:
            if not line.strip():
                continue
            if not line.startswith(" "):
                names = [n.strip() for n in line.split(" : ")[0].split(",")]
                parameters.update({n: "" for n in names})
                continue
            for name in names:
                parameters[name] = f"{parameters[name]} {line.strip()}".strip()
    return Docstring(description.split("\n")[0], description, parameters)


def _unwrap_optional(annotation: Any) -> Any:
    """``X | None`` -> X; ``str | Path`` -> str (the CLI passes strings); others unchanged."""
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return annotation
    members = [a for a in typing.get_args(annotation) if a is not type(None)]
    return str if str in members else members[0]


def _argument(verb: str, parameter: inspect.Parameter, annotation: Any) -> dict[str, Any]:
    """The ``add_argument`` keywords (without help) for one parameter of a verb."""
    kind = _unwrap_optional(annotation)
    origin = typing.get_origin(kind)
    options: dict[str, Any] = {}
    if kind is bool:
        options["action"] = argparse.BooleanOptionalAction
    elif origin is Literal:
        options["choices"] = list(typing.get_args(kind))
        options["type"] = type(options["choices"][0])
    elif origin is tuple and typing.get_args(kind)[0] in _SCALARS:
        options["nargs"] = "+"
        options["type"] = typing.get_args(kind)[0]
    elif origin in (list, collections.abc.Sequence) and typing.get_args(kind)[0] in _SCALARS:
        options["action"] = _Repeat
        options["type"] = typing.get_args(kind)[0]
    elif kind in _SCALARS:
        options["type"] = kind
    else:
        raise TypeError(
            f"verb {verb}: parameter {parameter.name!r} has the annotation {annotation!r}, which "
            "the CLI cannot map; use bool, int, float, str, Path, X | None, tuple[X, ...], "
            "list[X], Sequence[X] or Literal[...]"
        )
    if parameter.default is not inspect.Parameter.empty:
        options["default"] = parameter.default
    elif parameter.kind is inspect.Parameter.KEYWORD_ONLY:
        options["required"] = True
    return options


class _Repeat(argparse.Action):
    """``--name a --name b`` -> ``[a, b]``; the function's default is replaced, not extended."""

    def __call__(self, parser, namespace, values, option_string=None):
        items = getattr(namespace, self.dest)
        setattr(namespace, self.dest, [*([] if items is self.default else items), values])


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the docstring's line breaks in the verb's description."""


def add_verb(subparsers: argparse._SubParsersAction, verb: Verb) -> argparse.ArgumentParser:
    """Add ``verb``'s parser to ``subparsers``, built from its signature and docstring."""
    doc = parse_docstring(verb.function)
    parser = subparsers.add_parser(
        verb.name.split(".")[-1],
        help=doc.summary.replace("%", "%%"),
        description=doc.description,
        formatter_class=_Formatter,
    )
    hints = typing.get_type_hints(verb.function)
    for parameter in inspect.signature(verb.function).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise TypeError(f"verb {verb.name}: *args/**kwargs cannot become options")
        options = _argument(verb.name, parameter, hints.get(parameter.name, str))
        text = doc.parameters.get(parameter.name)
        if text is not None:
            text = text.replace("%", "%%")  # argparse formats help texts with %
        if text is not None and options.get("default") not in (None, ()):
            text += " (default: %(default)s)"
        if parameter.kind is parameter.KEYWORD_ONLY:
            flag = "--" + parameter.name.replace("_", "-")
            parser.add_argument(flag, dest=parameter.name, help=text, **options)
        else:
            options.pop("required", None)
            if "default" in options:
                options["nargs"] = "?"
            parser.add_argument(parameter.name, help=text, **options)
    parser.set_defaults(func=verb.function)
    return parser


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of all installed verbs (``argv=None``), or the one ``argv`` runs.

    With ``argv`` only the selected verb's module is imported and given its options; the
    other verbs are listed with their one-line help (``verb_summary``).
    """
    parser = argparse.ArgumentParser(
        prog="lse-material", description="LSE-ICNN multi-well constitutive laws for DOLFINx."
    )
    version = importlib.metadata.version("lse-material")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version}")
    top = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    groups = {}
    for name, help_text in GROUPS.items():
        group = top.add_parser(name, help=help_text)
        groups[name] = group.add_subparsers(dest="what", metavar="WHAT", required=True)
    points = _points()
    chosen = None if argv is None else _selected(argv, {p.name for p in points})
    for point in points:
        group, _, what = point.name.rpartition(".")
        if group and group not in groups:
            raise ValueError(
                f"verb {point.name!r}: unknown group {group!r}; use one of {sorted(GROUPS)} "
                "or a name without a dot"
            )
        subparsers = groups[group] if group else top
        if argv is None or point.name == chosen:
            add_verb(subparsers, Verb(point.name, point.load()))
        else:  # listed only: its module is imported when the verb is chosen
            subparsers.add_parser(what, help=verb_summary(point).replace("%", "%%"))
    return parser


def _mpi_world():
    """MPI's COMM_WORLD when this process is one of several MPI ranks, else None."""
    mpi = sys.modules.get("mpi4py.MPI")  # a verb that runs under MPI has imported it
    if mpi is None or not mpi.Is_initialized() or mpi.Is_finalized():
        return None
    return mpi.COMM_WORLD if mpi.COMM_WORLD.size > 1 else None


def _end_mpi_run(code: int) -> None:
    """Under mpirun (more than one rank), after an error: exit now with ``code``, once every
    rank has reported its error (or after 30 s), skipping the interpreter's teardown.

    Objects whose destruction is collective (MUMPS factors inside a SNES, VTX writers) would be
    destroyed in a different order on ranks that raised from different lines (rank 0's error
    carries its cause), and the run would hang at exit. A rank that raised alone while the
    others wait in a collective ends after the timeout, and mpirun then stops the others.
    """
    world = _mpi_world()
    if world is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    request, deadline = world.Ibarrier(), time.monotonic() + 30.0
    while not request.Test() and time.monotonic() < deadline:
        time.sleep(0.01)
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    """Run one verb. Bad input (ValueError, FileNotFoundError): one line on stderr, exit 2;
    an interrupt (Ctrl-C, or a verb's KeyboardInterrupt subclass): one line, exit 130; any
    other error: its traceback, exit 1. Under mpirun every rank reports and exits
    (``_end_mpi_run``)."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    options = {k: v for k, v in vars(args).items() if k not in ("verb", "what", "func")}
    try:
        args.func(**options)
    except (ValueError, FileNotFoundError) as error:
        print(f"lse-material: error: {error}", file=sys.stderr)
        _end_mpi_run(2)
        return 2
    except KeyboardInterrupt as error:
        print(f"lse-material: {error or 'interrupted'}", file=sys.stderr)
        _end_mpi_run(130)
        return 130
    except Exception:
        if _mpi_world() is not None:  # serial: Python prints it
            traceback.print_exc()
            _end_mpi_run(1)
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
