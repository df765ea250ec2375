"""The ``lse-material`` console script.

Each verb lives in its own module, which exposes ``register(groups)``: it adds its parser to
``groups["top"]`` (a verb such as ``fit-1d``) or to one of the verb groups ``train``,
``simulate``, ``bench``, and sets ``func`` to the Python function that does the work with the
same options (so tests and notebooks call the function, not a subprocess). Modules must not
import DOLFINx at import time: users without it can still train.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that contribute verbs, in the order they appear in --help.
VERB_MODULES = [
    "lse_material.training.one_d",
    "lse_material.training.mechanochemical",
    "lse_material.training.schlogl",
    "lse_material.training.gene_circuit",
    "lse_material.modelcard",
    "lse_material.bench",
    "lse_material.fem_cases.verification",
    "lse_material.fem_cases.spinodal",
    "lse_material.training.metamaterial",
    "lse_material.fem_cases.metamaterial",
]
GROUPS = {
    "train": "train a model from one of the data models",
    "simulate": "run a finite-element case (serial, or under mpirun)",
    "bench": "benchmarks: side-by-side timings written as JSON",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lse-material", description="LSE-ICNN multi-well constitutive laws for DOLFINx."
    )
    top = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    groups = {"top": top}
    for name, help_text in GROUPS.items():
        group = top.add_parser(name, help=help_text)
        groups[name] = group.add_subparsers(dest="what", metavar="WHAT", required=True)
    for module in VERB_MODULES:
        importlib.import_module(module).register(groups)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = {k: v for k, v in vars(args).items() if k not in ("verb", "what", "func")}
    try:
        args.func(**options)
    except (ValueError, FileNotFoundError) as error:
        print(f"lse-material: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
