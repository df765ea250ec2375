"""The generated CLI: every verb's options come from its function, with help and its defaults."""

from __future__ import annotations

import argparse
import inspect
import subprocess
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Literal, get_args

import pytest
from lse_material.training.data.one_d import FUNCTIONS
from lse_material.training.one_d import FunctionName

import lse_material
from lse_material.cli import (
    GROUPS,
    VERB_GROUP,
    Verb,
    add_verb,
    build_parser,
    main,
    parse_docstring,
    verb_summary,
)
from tests.conftest import dolfinx_missing

EXPECTED = {
    "fit-1d",
    "inspect",
    "wells",
    "train.data",
    "simulate.verification",
    "train.mechanochemical",
    "train.schlogl",
    "train.gene-circuit",
    "train.metamaterial",
    "simulate.spinodal",
    "simulate.metamaterial",
    "bench.law",
    "bench.fit-1d",
    "bench.bvp",
    "bench.spinodal",
}


def _subparser(parser: argparse.ArgumentParser, name: str):
    """The sub-parser ``name`` of ``parser`` (``WHAT``: the sub-parsers action itself)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action if name == "WHAT" else action.choices[name]
    raise KeyError(name)


def _verb_parser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    group, _, what = name.rpartition(".")
    return _subparser(_subparser(parser, group), what) if group else _subparser(parser, what)


POINTS = sorted(entry_points(group=VERB_GROUP), key=lambda p: p.name)


def _loaded(point) -> Verb:
    """The verb of an entry point; skipped where its module needs a missing DOLFINx."""
    try:
        return Verb(point.name, point.load())
    except ImportError:
        if dolfinx_missing():
            pytest.skip(f"{point.name}: {dolfinx_missing()}")
        raise


def test_all_verbs_installed_in_known_groups():
    names = {p.name for p in POINTS}
    assert names >= EXPECTED, EXPECTED - names
    assert all(n.rpartition(".")[0] in ("", *GROUPS) for n in names)


@pytest.mark.parametrize("point", POINTS, ids=lambda p: p.name)
def test_every_option_has_help_and_the_function_default(point):
    """Each parameter is an option with help text; the parsed defaults are the function's."""
    verb = _loaded(point)
    doc = parse_docstring(verb.function)
    signature = inspect.signature(verb.function)
    assert doc.summary, f"{verb.name}: the docstring needs a summary line"
    unknown = set(doc.parameters) - set(signature.parameters)
    assert not unknown, f"{verb.name}: the docstring documents unknown parameters {unknown}"
    group, _, what = verb.name.rpartition(".")
    words = [*(group and [group]), what]
    parser = _verb_parser(build_parser(words), verb.name)
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    required = []
    for name, parameter in signature.parameters.items():
        action = actions[name]
        assert action.help and doc.parameters.get(name), f"{verb.name}: {name} has no help text"
        if parameter.default is inspect.Parameter.empty:
            required += action.option_strings[:1] + ["x"] if action.option_strings else ["x"]
    args = build_parser(words).parse_args([*words, *required])
    assert args.func is verb.function
    for name, parameter in signature.parameters.items():
        if parameter.default is not inspect.Parameter.empty:
            assert getattr(args, name) == parameter.default, (verb.name, name)


def _example(
    path: str,
    count: int = 3,
    *,
    out: str | Path,
    rate: float | None = None,
    mode: Literal["fast", "slow"] = "slow",
    sizes: tuple[int, ...] = (1, 2),
    names: Sequence[str] = (),
    plots: bool = True,
) -> dict:
    """An example verb (100 % documented).

    Longer description.

    Parameters
    ----------
    path
        a positional argument.
    count
        an optional positional argument.
    out
        output folder,
        on two lines.
    rate : float, optional
        a rate.
    mode
        the mode (fast: 10 % of the time).
    sizes, names
        sizes and names.
    plots
        write plots.

    Returns
    -------
    the options
    """
    return dict(locals())


def _example_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="x")
    add_verb(parser.add_subparsers(dest="verb"), Verb("example", _example))
    return parser


def test_docstring_parameters_parsed():
    doc = parse_docstring(_example)
    assert doc.summary == "An example verb (100 % documented)."
    assert doc.description == "An example verb (100 % documented).\n\nLonger description."
    assert doc.parameters["out"] == "output folder, on two lines."
    assert doc.parameters["rate"] == "a rate."
    assert doc.parameters["sizes"] == doc.parameters["names"] == "sizes and names."
    assert set(doc.parameters) == set(inspect.signature(_example).parameters)


def test_annotations_map_to_options():
    parser = _example_parser()
    assert "10 % of the time" in _subparser(parser, "example").format_help()
    assert "(100 % documented)" in parser.format_help()
    args = parser.parse_args(["example", "p", "--out", "o"])
    assert (args.path, args.count, args.out, args.rate) == ("p", 3, "o", None)
    assert (args.mode, args.sizes, args.names, args.plots) == ("slow", (1, 2), (), True)
    args = parser.parse_args(
        ["example", "p", "7", "--out", "o", "--rate", "0.5", "--mode", "fast"]
        + ["--sizes", "4", "5", "6", "--names", "a", "--names", "b", "--no-plots"]
    )
    assert (args.count, args.rate, args.mode, args.sizes) == (7, 0.5, "fast", [4, 5, 6])
    assert (args.names, args.plots) == (["a", "b"], False)
    with pytest.raises(SystemExit):
        parser.parse_args(["example", "p"])  # --out is required (no default)
    with pytest.raises(SystemExit):
        parser.parse_args(["example", "p", "--out", "o", "--mode", "medium"])


def test_unmappable_annotation_is_a_clear_error():
    def bad(*, option: dict | None = None) -> None:
        """Bad.

        Parameters
        ----------
        option
            a dict.
        """

    parser = argparse.ArgumentParser()
    with pytest.raises(TypeError, match="'option'.*cannot map"):
        add_verb(parser.add_subparsers(), Verb("bad", bad))


def test_fit_1d_function_choices_are_the_data_models():
    assert set(get_args(FunctionName)) == {*FUNCTIONS, "all"}


def test_version_and_bad_input(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"lse-material {lse_material.__version__}"
    assert main(["inspect", str(tmp_path / "missing.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lse-material: error: "), err


def test_only_the_selected_verb_is_imported():
    script = (
        "import sys\n"
        "from lse_material.cli import build_parser\n"
        "build_parser(['train', 'schlogl', '--out', 'x']).parse_args(['train', 'schlogl', '--out', 'x'])\n"
        "build_parser(['--help'])\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('lse_material.fem.', 'lse_material.fem_cases.', 'dolfinx')))\n"
        "assert loaded == [], loaded\n"
        "assert 'lse_material.training.schlogl' in sys.modules\n"
        "assert 'lse_material.training.gene_circuit' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    train = _subparser(build_parser(["train", "--help"]), "train")
    assert set(_subparser(train, "WHAT").choices) >= {"schlogl", "gene-circuit", "metamaterial"}


@pytest.mark.parametrize("point", POINTS, ids=lambda p: p.name)
def test_listed_summary_read_without_import_is_the_docstrings(point):
    verb = _loaded(point)
    assert verb_summary(point) == parse_docstring(verb.function).summary
