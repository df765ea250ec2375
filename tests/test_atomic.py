"""Atomic writes: a writer killed mid-write, or failing, leaves the previous file intact."""

import json
import signal
import subprocess
import sys
import textwrap

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import lse_material  # noqa: E402
from lse_material.atomic import atomic_write, save_figure, write_bytes, write_json  # noqa: E402

WRITER = textwrap.dedent(
    """
    import sys, time
    from lse_material.atomic import atomic_write

    with atomic_write(sys.argv[1]) as f:
        chunk = b"new!" * 2**18  # 1 MiB
        for i in range(4096):  # up to 4 GiB: killed long before
            f.write(chunk)
            f.flush()
            if i == 8:
                print("writing", flush=True)
    """
)


def test_a_writer_killed_mid_write_leaves_the_previous_file(tmp_path):
    target = tmp_path / "model.safetensors"
    lse_material.save(lse_material.LSEICNN(2, 2, (3,)), target)
    previous = target.read_bytes()
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout.readline().strip() == "writing"
        partial = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        assert partial and partial[0].stat().st_size >= 8 * 2**20  # it was mid-write
        writer.send_signal(signal.SIGKILL)
        assert writer.wait(timeout=30) == -signal.SIGKILL
    finally:
        writer.kill()
    assert target.read_bytes() == previous
    lse_material.load(target)  # still a valid, verified model file


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    target = tmp_path / "summary.json"
    write_json(target, {"a": 1})
    with pytest.raises(TypeError):
        write_json(target, {"a": object()})
    with pytest.raises(RuntimeError, match="stop"), atomic_write(target) as f:
        f.write(b"half")
        raise RuntimeError("stop")
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_figures_bytes_and_checkpoints_go_through_the_helper(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    png = save_figure(fig, tmp_path / "plots" / "line.png", dpi=50)
    plt.close(fig)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert write_bytes(tmp_path / "b.bin", b"xyz").read_bytes() == b"xyz"
    from lse_material.training.fit import FitResult

    FitResult(epoch=[0], loss=[1.0]).save(tmp_path / "history.json")
    assert json.loads((tmp_path / "history.json").read_text())["loss"] == [1.0]
    assert not list(tmp_path.rglob("*.tmp"))
