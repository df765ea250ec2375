"""The training engine (``lse-material train data``): config, data checks, resume, the example."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from lse_material.training.datafile import DataConfig, DataError, load_data, split_rows
from lse_material.training.engine import (
    ConfigError,
    config_from_dict,
    load_config,
    train,
    train_data,
)

import lse_material

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "double_well_2d"
README = ROOT / "README.md"
TINY = {  # a fast run: 2 seeds, 3 modes [ours, CI size]
    "model": {"max_modes": 3, "hidden": [6, 6]},
    "fit": {"epochs": 60, "finetune_epochs": 10, "seeds": 2, "device": "cpu"},
    "output": {"plots": False, "log_every": 10, "checkpoint_every": 20},
}


def write_csv(path: Path, header: list[str], rows) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def double_well_rows(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(-1.5, 1.5, n), rng.uniform(-1, 1, n)
    psi = (x**2 - 1) ** 2 + 0.5 * y**2 + 0.1 * x
    gx, gy = 4 * x * (x**2 - 1) + 0.1, y
    weight = rng.uniform(0.5, 1.5, n)
    group = [f"g{i % 6}" for i in range(n)]
    return [list(r) for r in zip(x, y, psi, gx, gy, weight, group)]


HEADER = ["x", "y", "psi", "dpsi_dx", "dpsi_dy", "w", "path"]


def tiny_config(file: Path, **data) -> dict:
    base = {
        "file": str(file),
        "inputs": ["x", "y"],
        "energy": "psi",
        "gradients": {"x": "dpsi_dx", "y": "dpsi_dy"},
    }
    return {"data": {**base, **data}, **TINY}


# ----------------------------------------------------------------------------- config


def test_unknown_keys_raise_naming_the_key_and_the_valid_ones(tmp_path):
    config = tiny_config(tmp_path / "d.csv")
    config["fit"] = {**config["fit"], "epoch": 5}
    with pytest.raises(ConfigError, match=r"fit\.epoch.*valid keys.*'epochs'"):
        config_from_dict(config)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['optimiser'\]"):
        config_from_dict({**tiny_config(tmp_path / "d.csv"), "optimiser": {}})
    with pytest.raises(ConfigError, match=r"fit\.epochs must be of type int; got '5'"):
        config_from_dict({**tiny_config(tmp_path / "d.csv"), "fit": {"epochs": "5"}})


def test_toml_and_overrides(tmp_path):
    (tmp_path / "run.toml").write_text(
        '[data]\nfile = "d.csv"\ninputs = ["x", "y"]\nenergy = "psi"\n[fit]\nepochs = 10\n'
    )
    config = load_config(
        tmp_path / "run.toml",
        ["fit.epochs=2000", "model.hidden=[4, 4]", "fit.device=cpu", "data.gradients={x='g'}"],
    )
    assert config.fit.epochs == 2000 and config.model.hidden == (4, 4)
    assert config.fit.device == "cpu" and config.data.gradients == {"x": "g"}
    assert Path(config.data.file) == (tmp_path / "d.csv").resolve()  # relative to the config
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(tmp_path / "run.toml", ["fit.epochs"])
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['fit.epoch'\]"):
        load_config(tmp_path / "run.toml", ["fit.epoch=3"])


# ----------------------------------------------------------------------------- bad input


def bad_case(tmp_path: Path, case: str):
    """(config dict, expected message) of one bad-input case."""
    rows = double_well_rows(40)
    file = tmp_path / "d.csv"
    data: dict = {}
    header = list(HEADER)
    if case == "missing column":
        data = {"energy": "energy"}
        message = r"no column\(s\) \['energy'\]; the file has \['x', 'y', 'psi'"
    elif case == "duplicate column":
        header[5] = "x"
        message = r"duplicate column name\(s\) \['x'\]"
    elif case == "non-numeric cell":
        rows[3][1] = "abc"
        message = r"line 5, column 'y': 'abc' is not a number"
    elif case == "non-finite rows":
        rows[2][2], rows[7][3] = "nan", "inf"
        message = r"2 row\(s\) with NaN/inf: line 4 \(psi\); line 9 \(dpsi_dx\)"
    elif case == "too few rows":
        rows = rows[:4]
        message = r"4 rows are too few for validation = 0.2"
    elif case == "unknown gradient input":
        data = {"gradients": {"z": "dpsi_dy"}}
        message = r"names input\(s\) \['z'\] \(columns \['dpsi_dy'\]\), which are not among"
    elif case == "constant input":
        for r in rows:
            r[1] = 0.5
        message = r"input column 'y' is constant \(0.5\)"
    elif case == "single group":
        for r in rows:
            r[6] = "only"
        data = {"group": "path"}
        message = r"the group column 'path' has a single group \('only'"
    write_csv(file, header, rows)
    return tiny_config(file, **data), message


CASES = [
    "missing column",
    "duplicate column",
    "non-numeric cell",
    "non-finite rows",
    "too few rows",
    "unknown gradient input",
    "constant input",
    "single group",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_one_clear_error_nothing_written(tmp_path, case):
    config, message = bad_case(tmp_path, case)
    out = tmp_path / "run"
    with pytest.raises(DataError, match=message):
        train(config_from_dict(config), out=out)
    assert not out.exists()


def test_nonfinite_rows_dropped_on_request_and_reported(tmp_path):
    config, _ = bad_case(tmp_path, "non-finite rows")
    config["data"]["drop_nonfinite"] = True
    data = load_data(config_from_dict(config).data)
    assert data.dropped == 2 and len(data.x) == 38
    assert 4 not in data.rows and 9 not in data.rows  # file lines of the dropped rows


def test_group_split_holds_out_whole_groups(tmp_path):
    file = write_csv(tmp_path / "d.csv", HEADER, double_well_rows(60))
    config = DataConfig(str(file), ("x", "y"), energy="psi", group="path", validation=0.34)
    data = load_data(config)
    split = split_rows(data, config)
    train_groups = set(data.groups[split.train.numpy()])
    val_groups = set(data.groups[split.validation.numpy()])
    assert len(val_groups) == 2 and not train_groups & val_groups
    assert len(split.train) + len(split.validation) == 60


def test_output_folder_with_another_run_is_refused(tmp_path):
    file = write_csv(tmp_path / "d.csv", HEADER, double_well_rows(40))
    config = config_from_dict(tiny_config(file))
    out = tmp_path / "run"
    first = train(config, out=out)
    assert (out / "model.safetensors").is_file() and (out / "summary.json").is_file()
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    with pytest.raises(ValueError, match=r"holds another run .*--overwrite"):
        train(config, out=out)
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp  # untouched
    second = train(config, out=out, overwrite=True)
    assert second.summary["best_seed"] == first.summary["best_seed"]
    card = lse_material.load(out / "model.safetensors").card
    assert card["training_box"]["x"][0] == pytest.approx(min(r[0] for r in double_well_rows(40)))
    assert card["input_units"] == ["1", "1"] and card["training"]["data_sha256"]
    assert card["training"]["config"] == json.loads(json.dumps(asdict(config)))


# ----------------------------------------------------------------------------- resume


RESUME = {  # gradients only (Sobolev), sample weights, group split, elimination
    "fit": {"epochs": 200, "finetune_epochs": 10, "seeds": 2, "device": "cpu", "threads": 1},
    "output": {"plots": False, "log_every": 10, "checkpoint_every": 10},
    "model": {"max_modes": 3, "hidden": [6, 6]},
}


def resume_toml(tmp_path: Path) -> Path:
    write_csv(tmp_path / "d.csv", HEADER, double_well_rows(60))
    lines = [
        "[data]",
        'file = "d.csv"',
        'inputs = ["x", "y"]',
        'gradients = { x = "dpsi_dx", y = "dpsi_dy" }',
        'weight = "w"',
        'group = "path"',
    ]
    for table, values in RESUME.items():
        lines.append(f"[{table}]")
        for key, value in values.items():
            text = str(value).lower() if isinstance(value, bool) else repr(value)
            lines.append(f"{key} = {text.replace(chr(39), chr(34))}")
    path = tmp_path / "run.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    threads = torch.get_num_threads()
    try:
        return train_data(config=resume_toml(tmp), out=tmp / "run")
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_and_resumed_run_matches_an_uninterrupted_one(tmp_path, sig, uninterrupted):
    config = resume_toml(tmp_path)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "lse_material.cli", "train", "data"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [*command, "--config", str(config), "--out", str(out)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    if sig == signal.SIGTERM:  # a checkpoint on the signal, one line, exit 130
        assert process.returncode == 130, stderr
        assert re.search(r"interrupted at epoch \d+; checkpoint .* Continue with --resume", stderr)
    else:
        assert process.returncode == -signal.SIGKILL
    assert (out / "checkpoint.pt").is_file() and not (out / "model.safetensors").exists()
    threads = torch.get_num_threads()
    try:
        resumed = train_data(config=config, out=out, resume=True)
    finally:
        torch.set_num_threads(threads)
    reference = uninterrupted.model.state_dict()
    for key, value in resumed.model.state_dict().items():
        assert float((value - reference[key]).abs().max()) <= 1e-12, key
    assert (
        resumed.summary["seeds"]["active_modes"] == uninterrupted.summary["seeds"]["active_modes"]
    )


def test_resume_refuses_a_changed_config(tmp_path, uninterrupted):
    config = resume_toml(tmp_path)
    train_data(config=config, out=tmp_path / "run", set=["fit.epochs=20", "fit.elimination=false"])
    with pytest.raises(ValueError, match=r"differs in \['config.fit.epochs'\]"):
        train_data(config=config, out=tmp_path / "run", resume=True, set=["fit.elimination=false"])


# ----------------------------------------------------------------------------- the example


def true_minima() -> np.ndarray:
    sys.path.insert(0, str(EXAMPLE))
    try:
        import make_data
    finally:
        sys.path.remove(str(EXAMPLE))
    return make_data.true_minima()


@pytest.mark.fem
def test_example_finds_two_wells_and_runs_in_dolfinx(tmp_path):
    ci_size = [
        "fit.seeds=2",
        "fit.epochs=1000",
        "fit.finetune_epochs=100",
        "model.max_modes=4",
        "output.plots=false",
    ]
    result = train_data(config=EXAMPLE / "run.toml", out=tmp_path, set=ci_size)
    minima = [m["location"] for m in result.summary["wells"]["minima"] if m["in_box"]]
    found = np.array(sorted([m["x"], m["y"]] for m in minima))
    assert found.shape == (2, 2), minima
    assert np.abs(found - true_minima()).max() < 0.05, found

    text = README.read_text()
    block = re.search(r"<!-- example: own-data -->\n```python\n(.*?)```", text, re.S).group(1)
    code = block.replace(
        '"results/double_well_2d/model.safetensors"', repr(str(tmp_path / "model.safetensors"))
    )
    namespace = {}
    exec(compile(code, "README own-data example", "exec"), namespace)
    assert namespace["result"].converged
    relaxed = namespace["phi"].x.array.reshape(-1, 2)  # every node relaxes into the right well
    assert np.abs(relaxed - found[1]).max() < 1e-3, relaxed.mean(0)


def test_npz_reads_like_csv(tmp_path):
    rows = double_well_rows(30)
    csv_file = write_csv(tmp_path / "d.csv", HEADER, rows)
    columns = {name: np.array([r[j] for r in rows]) for j, name in enumerate(HEADER)}
    np.savez(tmp_path / "d.npz", **columns)
    kw = dict(energy="psi", gradients={"y": "dpsi_dy"}, weight="w", group="path")
    a = load_data(DataConfig(str(csv_file), ("x", "y"), **kw))
    b = load_data(DataConfig(str(tmp_path / "d.npz"), ("x", "y"), **kw))
    for name in ("x", "energy", "gradient", "weight"):
        assert torch.allclose(getattr(a, name), getattr(b, name), rtol=1e-11, atol=0)
    assert list(a.groups) == list(b.groups) and b.gradient_inputs == (1,)
    columns["y"] = columns["y"].astype(str)
    columns["y"][4] = "oops"
    np.savez(tmp_path / "bad.npz", **columns)
    with pytest.raises(DataError, match=r"row 4, column 'y': 'oops' is not a number"):
        load_data(DataConfig(str(tmp_path / "bad.npz"), ("x", "y"), **kw))


def test_early_stopping_after_the_ramp_when_validation_stalls(tmp_path):
    """A model that does not change never improves: the monitor stops ``patience`` epochs
    after the L1 ramp ends, and not before."""
    from lse_material.training.engine import _Monitor, _new_model, _problem

    file = write_csv(tmp_path / "d.csv", HEADER, double_well_rows(40))
    config = config_from_dict(tiny_config(file))
    data = load_data(config.data)
    problem = _problem(data, split_rows(data, config.data), config.data, "cpu")
    model, _ = _new_model(config, problem, "cpu")
    monitor = _Monitor(problem, model, every=10, patience=30, start=100)
    stops = [e for e in range(0, 300) if monitor(e)]
    assert stops[0] == 130 and monitor.state["stopped"] == 130
    assert monitor.state["epoch"][:3] == [0, 10, 20]


# ----------------------------------------------------------------------------- modes on wells

WELLS = {  # modes on the data's wells, the right one in its own group [ours]
    "init": "wells",
    "first_well_input": "x",
    "groups": "threshold",
    "group_input": "x",
    "group_threshold": 0.0,
    "group_rho": 2.0,
}


def test_modes_start_on_the_wells_grouped_by_threshold_and_pretrained(tmp_path):
    from lse_material.training.engine import _new_model, _pretrain, _problem
    from lse_material.training.mode_init import regions

    file = write_csv(tmp_path / "d.csv", HEADER, double_well_rows(300))
    config = config_from_dict(
        {
            **tiny_config(file),
            "model": {"max_modes": 2, "hidden": [6, 6], **WELLS},
            "fit": {**TINY["fit"], "seeds": 1, "pretrain_epochs": 150, "elimination": False},
        }
    )
    data = load_data(config.data)
    problem = _problem(data, split_rows(data, config.data), config.data, "cpu")
    model, centres = _new_model(config, problem, "cpu")
    assert np.abs(centres[:, 0].numpy() - true_minima()[:, 0]).max() < 0.15, centres
    assert np.abs(centres[:, 1].numpy()).max() < 0.15, centres  # first: the smallest x
    assert model.groups == (0, 1)
    assert model.group_rho()[0].tolist() == pytest.approx([2.0, 2.0])
    x = problem.train.x
    region = regions(model.member(0), x, centres)
    assert set(region[x[:, 0] < -0.5].tolist()) == {0} and set(region[x[:, 0] > 0.5].tolist()) == {
        1
    }
    before = problem.loss(model, problem.train).item()
    local = _pretrain(model, problem, config, centres)
    assert local < 0.5 and problem.loss(model, problem.train).item() < before

    result = train(config, out=tmp_path / "run")
    assert result.summary["groups"] == [0, 1] and len(result.summary["group_rho"]) == 2
    assert result.summary["pretrain_loss"] < 0.5
    assert lse_material.load(tmp_path / "run" / "model.safetensors").groups == (0, 1)


def test_elimination_may_empty_a_group_of_a_nested_model(tmp_path):
    """Three modes in two groups; every elimination accepted (growth 1e9) closes two, so one
    group is left empty: the nested LSE stays finite and the saved model loads."""
    file = write_csv(tmp_path / "d.csv", HEADER, double_well_rows(300))
    config = config_from_dict(
        {
            **tiny_config(file),
            "model": {"max_modes": 3, "hidden": [6, 6], **WELLS},
            "fit": {**TINY["fit"], "seeds": 1, "elimination_growth": 1e9},
        }
    )
    result = train(config, out=tmp_path / "run")
    assert result.summary["elimination"]["removed"] == [2]
    assert result.summary["active_modes"] == 1
    model = lse_material.load(tmp_path / "run" / "model.safetensors")
    x = torch.rand(50, 2, dtype=torch.float64) * 2 - 1
    d = model.derivatives(x, hessian=True)
    assert torch.isfinite(d.energy).all() and torch.isfinite(d.hessian).all()


BAD_WELLS = [
    ({"fit": {"elimination_growth": 0.9}}, r"fit.elimination_growth >= 1; got .*0.9"),
    ({"fit": {"pretrain_epochs": 10}}, r"fit.pretrain_epochs = 10 needs model.init = \"wells\""),
    (
        {"model": WELLS, "fit": {"pretrain_epochs": 10, "seeds": 2, "elimination": False}},
        r"and fit.seeds = 1.*seeds = 2",
    ),
    ({"model": {**WELLS, "group_input": "z"}}, r"model.group_input = 'z' is not among"),
    ({"model": {**WELLS, "first_well_input": "q"}}, r"first_well_input = 'q' is not among"),
    ({"model": {**WELLS, "init": "spread"}}, r"need model.init = \"wells\"; got init = 'spread'"),
    (
        {"model": {"init": "wells", "groups": "threshold", "group_input": "x"}},
        r"both model.group_input and model.group_threshold",
    ),
    ({"model": {"group_threshold": 1.0}}, r"used only with it"),
    ({"model": {"init": "everywhere"}}, r"model.init must be one of \['spread', 'wells'\]"),
    ({"model": {"groups": "kmeans"}}, r"model.groups must be one of"),
    ({"model": WELLS, "gradients": {"x": "dpsi_dx"}}, r"data.gradients lacks \['y'\]"),
]


@pytest.mark.parametrize(("change", "message"), BAD_WELLS)
def test_bad_well_options_raise_naming_them(tmp_path, change, message):
    base = tiny_config(tmp_path / "d.csv")
    if "gradients" in change:
        base["data"]["gradients"] = change["gradients"]
    for table in ("model", "fit"):
        base[table] = {**base[table], **change.get(table, {})}
    with pytest.raises(ConfigError, match=message):
        config_from_dict(base)


def test_mechanochemical_example_is_the_verbs_config():
    """``train data`` on the example reproduces ``train mechanochemical``: the same data, model
    and fit tables (the file and the output options aside)."""
    from lse_material.training.data import mechanochemical as mc
    from lse_material.training.mechanochemical import (
        EPOCHS,
        PRETRAIN_EPOCHS,
        mechanochemical_config,
    )

    example = load_config(ROOT / "examples" / "mechanochemical_wells" / "run.toml")
    verb = mechanochemical_config(
        mc.parse_params(()),
        epochs=EPOCHS,
        pretrain_epochs=PRETRAIN_EPOCHS,
        seed=0,
        nested=True,
        eliminate=True,
    )
    assert asdict(example.data) == {**asdict(verb.data), "file": example.data.file}
    assert asdict(example.model) == asdict(verb.model)
    assert asdict(example.fit) == asdict(verb.fit)


REFINE_CI = 200  # L-BFGS iterations of the small runs' fine-tunes and polish


def _train_mechanochemical_example(
    tmp_path, samples: int, epochs: int, pretrain_epochs: int, log_every: int = 10
):
    """``train data`` on the example's CSV (written by its make_data.py) at a small size."""
    import importlib.util

    script = ROOT / "examples" / "mechanochemical_wells" / "make_data.py"
    spec = importlib.util.spec_from_file_location("mechanochemical_wells_data", script)
    mc_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mc_data)  # not "make_data": the double-well example's has that name
    tmp_path.mkdir(parents=True, exist_ok=True)
    file = mc_data.main(tmp_path / "data.csv", samples=samples)
    ci_size = [
        f"data.file={json.dumps(str(file))}",
        f"fit.epochs={epochs}",
        f"fit.pretrain_epochs={pretrain_epochs}",
        f"fit.finetune_epochs={REFINE_CI}",
        f"fit.polish_epochs={REFINE_CI}",
        "fit.device='cpu'",
        "output.plots=false",
        f"output.log_every={log_every}",
    ]
    config = ROOT / "examples" / "mechanochemical_wells" / "run.toml"
    return train_data(config=config, out=tmp_path / "run", set=ci_size)


def test_mechanochemical_example_config_trains_with_phase_groups(tmp_path):
    """The example's config on a small draw of the data model: the reference phase (c < 0.5)
    and the transformed one get separate groups, and the saved law keeps them."""
    result = _train_mechanochemical_example(tmp_path, samples=300, epochs=20, pretrain_epochs=20)
    groups = result.summary["groups"]
    assert groups[0] == 0 and set(groups) == {0, 1}, groups  # first: the smallest c
    assert np.isfinite(result.summary["pretrain_loss"])
    assert lse_material.load(tmp_path / "run" / "model.safetensors").groups == tuple(groups)


def test_mechanochemical_csv_through_train_data_reproduces_the_verb(tmp_path):
    """Issue figure: the data model exported to CSV and trained by ``train data`` is the law of
    ``train mechanochemical`` (same rows, split and start): same weights and well table. The
    CSV run logs every 7 epochs, the verb every epoch: logging must not change a fit."""
    from lse_material.training.mechanochemical import train_mechanochemical

    size = dict(samples=300, epochs=40, pretrain_epochs=20)
    generic = _train_mechanochemical_example(tmp_path / "csv", **size, log_every=7)
    refine = dict(finetune_iterations=REFINE_CI, polish_iterations=REFINE_CI)
    verb = train_mechanochemical(
        out=tmp_path / "verb", seed=0, plots=False, device="cpu", **size, **refine
    )
    a, b = generic.model.state_dict(), verb.model.state_dict()
    assert a.keys() == b.keys()
    for name in set(a) - {"energy_shift"}:  # the verb fixes ψ's constant on the data model's ψ
        assert torch.allclose(a[name], b[name], rtol=1e-12, atol=1e-12), name
    mine = [m["location"] for m in generic.summary["wells"]["minima"]]
    theirs = [m["location"] for m in verb.summary["engine"]["wells"]["minima"]]
    assert len(mine) == len(theirs) > 0
    for x, y in zip(mine, theirs):
        assert np.allclose(list(x.values()), list(y.values()), atol=1e-9), (x, y)


# ----------------------------------------------------------------------------- 1-D study options


def test_range_normalization_makes_the_energy_loss_rmse_over_range_squared(tmp_path):
    """``energy_normalization = "range"``: ψ shifted by its minimum, scaled by its range, and
    the energy loss of any model is (RMSE / range)² on the training rows."""
    from lse_material.training.engine import _new_model, _problem

    file = write_csv(tmp_path / "d.csv", HEADER, double_well_rows(40))
    config = config_from_dict(tiny_config(file, gradients={}, energy_normalization="range"))
    data = load_data(config.data)
    split = split_rows(data, config.data)
    problem = _problem(data, split, config.data, "cpu")
    psi = data.energy[split.train]
    value_range = float(psi.max() - psi.min())
    assert problem.energy_shift == float(psi.min()) and problem.energy_scale == value_range
    model, _ = _new_model(config, problem, "cpu")
    with torch.no_grad():
        loss = problem.loss(model, problem.train)
        mse = (model(problem.train.x) - psi).pow(2).mean(-1)
    torch.testing.assert_close(loss, mse / value_range**2, rtol=1e-12, atol=0)
    with pytest.raises(DataError, match=r"energy_normalization must be one of \['std', 'range'\]"):
        config_from_dict(tiny_config(file, energy_normalization="minmax"))


def test_polish_learning_rate_defaults_to_the_fit_one(tmp_path):
    """polish_lr_network = 0 polishes with lr_network (the same weights as naming it); another
    value changes them. TrainResult.ensemble holds every seed, the saved model is its best."""
    file = write_csv(tmp_path / "d.csv", HEADER, double_well_rows(40))
    runs = {}
    for lr in (0.0, 3e-3, 1e-3):
        config = tiny_config(file)
        config["fit"] = {**config["fit"], "polish_epochs": 20, "polish_lr_network": lr}
        runs[lr] = train(config_from_dict(config), out=tmp_path / str(lr))
    x = torch.linspace(-1.5, 1.5, 7, dtype=torch.float64)[:, None].repeat(1, 2)
    energy = {lr: run.ensemble(x).detach() for lr, run in runs.items()}
    assert torch.equal(energy[0.0], energy[3e-3])  # lr_network = 3e-3 by default
    assert not torch.allclose(energy[0.0], energy[1e-3], rtol=1e-6, atol=0)
    best = runs[0.0].summary["best_seed"]
    torch.testing.assert_close(runs[0.0].model(x), energy[0.0][best], rtol=1e-12, atol=0)
    assert len(runs[0.0].history.epoch) == len(runs[0.0].history.loss) > 1
    with pytest.raises(ConfigError, match="fit.polish_lr_network must be >= 0"):
        config_from_dict({**tiny_config(file), "fit": {"polish_lr_network": -1.0}})
