"""The ``cogvla`` dispatcher: ordinary mistakes end in one line, ``--debug`` shows the traceback."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from cogvla import cli
from cogvla.cli import DEBUG_ENV, main


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if " INFO " not in line]
    assert captured.out == ""
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["ping", "localhost"], "cogvla ping: error: endpoint: expected tcp://HOST:PORT"),
        (["ping", "tcp://127.0.0.1:http"], "cogvla ping: error: endpoint: expected tcp://HOST:PORT"),
        (["serve", "--port", "0", "--checkpoint", "MISSING"], "cogvla serve: error: --checkpoint: expected"),
        (["serve", "--port", "0", "--device", "nope"], "cogvla serve: error: --device: expected cpu"),
        (["serve", "--port", "0", "--device", "cuda:7"], "cogvla serve: error: --device: 'cuda:7'"),
        (["import", "MISSING", "--out", "OUT"], "cogvla import: error: MISSING/config.json: missing"),
        (["train", "--data", "MISSING", "--out", "OUT"], "cogvla train: error: data: MISSING is neither"),
        (
            ["average", "--checkpoints", "A", "--out", "OUT"],
            "cogvla average: error: checkpoints: expected at least 2",
        ),
    ],
)
def test_ordinary_mistakes_end_in_one_line(
    argv: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    assert _one_error_line(capsys).startswith(expected)


def test_usage_errors_are_one_line_too(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["flops", "--preset", "huge"])
    assert info.value.code == 2
    line = _one_error_line(capsys)
    assert line.startswith("cogvla flops: error: argument --preset: invalid choice: 'huge'")
    assert line.endswith("(see cogvla flops --help)")


@pytest.mark.parametrize("how", ["flag-after-verb", "flag-before-verb", "env"])
def test_debug_shows_the_traceback(how: str, monkeypatch) -> None:
    argv = ["ping", "localhost"]
    if how == "flag-after-verb":
        argv.append("--debug")
    elif how == "flag-before-verb":
        argv.insert(0, "--debug")
    else:
        monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(ValueError, match="endpoint: expected tcp://HOST:PORT"):
        main(argv)


def test_an_unexpected_error_is_one_line_with_a_hint(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    def broken(_args: argparse.Namespace) -> int:
        raise AttributeError("'NoneType' object has no attribute 'shape'")

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.set_defaults(run=broken)

    monkeypatch.delenv(DEBUG_ENV, raising=False)
    monkeypatch.setattr("cogvla.flops_cli.run", broken)
    monkeypatch.setattr("cogvla.flops_cli.add_arguments", add_arguments)
    assert main(["flops"]) == 1
    line = _one_error_line(capsys)
    assert line.startswith("cogvla flops: error: AttributeError: 'NoneType' object has no attribute 'shape'")
    assert f"--debug or {DEBUG_ENV}=1 shows the traceback" in line


def test_user_errors_are_told_apart_from_bugs() -> None:
    from deploy.client import ServerTimeout

    assert cli.is_user_error(FileExistsError("out exists"))
    assert cli.is_user_error(ServerTimeout("no reply"))
    assert not cli.is_user_error(AttributeError("x"))
    assert not cli.is_user_error(ZeroDivisionError())


def test_train_flags_reach_the_config_and_bad_ones_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    from cogvla.train import trainer

    monkeypatch.delenv(DEBUG_ENV, raising=False)
    demo = tmp_path / "demo.hdf5"
    demo.touch()
    seen = []

    def fake_train(config, *args, **kwargs):
        seen.append(config)
        raise SystemExit(0)

    monkeypatch.setattr(trainer, "train", fake_train)
    argv = ["train", "--data", str(demo), "--out", str(tmp_path / "run"), "--proprio-dropout"]
    with pytest.raises(SystemExit):
        main([*argv, "0.4", "--proprio-noise", "0.02"])
    assert (seen[0].proprio_dropout, seen[0].proprio_noise) == (0.4, 0.02)
    capsys.readouterr()
    assert main([*argv, "1.5"]) == 1
    assert _one_error_line(capsys).startswith(
        "cogvla train: error: TrainConfig.proprio_dropout: expected a probability in [0, 1), got 1.5"
    )
    assert len(seen) == 1
