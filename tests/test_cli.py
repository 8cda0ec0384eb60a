"""cli.py: the command surface, exit codes, one-line errors."""

import subprocess
import sys

from typer.testing import CliRunner

from megalang.cli import app
from megalang.store.files import staging_dir
from megalang.store.manifest import describe_input, write_manifest

runner = CliRunner()


def test_help_lists_every_stage():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for cmd in ("data", "tokenizer", "train", "eval", "export", "generate", "demo", "verify", "lineage"):
        assert cmd in result.output


def test_python_dash_m_runs_the_same_cli():
    result = subprocess.run([sys.executable, "-m", "megalang", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("megalang ")


def test_train_config_errors_exit_2_in_one_line():
    result = runner.invoke(app, ["train", "train.max_steps=abc", "bogus.key=1"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "train.max_steps" in lines[0] and "bogus" in lines[0]


def test_train_recipe_must_be_yaml():
    result = runner.invoke(app, ["train", "recipe.txt"])
    assert result.exit_code == 2 and "recipe" in result.output


def test_verify_and_lineage(tmp_path):
    raw = tmp_path / "raw.txt"
    raw.write_text("x")
    with staging_dir(tmp_path / "art") as d:
        (d / "f.bin").write_bytes(b"abc")
        write_manifest(d, "data.prepare", {}, [describe_input(raw)], {"documents": 1})
    ok = runner.invoke(app, ["verify", str(tmp_path / "art")])
    assert ok.exit_code == 0
    lin = runner.invoke(app, ["lineage", str(tmp_path / "art")])
    assert lin.exit_code == 0 and "data.prepare" in lin.output and "raw inputs: 1 files" in lin.output
    (tmp_path / "art" / "f.bin").write_bytes(b"abd")
    bad = runner.invoke(app, ["verify", str(tmp_path / "art")])
    assert bad.exit_code == 1 and "f.bin" in bad.output
    missing = runner.invoke(app, ["verify", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "nope" in missing.output


def test_error_text_with_brackets_is_printed_verbatim(tmp_path):
    """Rich markup in a message (a key like `[train]` or a path with brackets) must not be swallowed."""
    from typer.testing import CliRunner

    from megalang.cli import app

    missing = tmp_path / "dir[train]" / "recipe.yaml"
    r = CliRunner().invoke(app, ["train", str(missing)])
    assert r.exit_code == 2
    assert "dir[train]" in r.output
