"""The example robot loop refuses contradictory chunking options before it connects."""

from __future__ import annotations

import pytest

from deploy.example_robot import main


def test_requery_before_grasp_with_prefetch_is_refused_by_name(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--endpoint", "tcp://127.0.0.1:1", "--prefetch", "--requery-before-grasp"])
    assert exit_info.value.code == 2
    assert "requery_before_grasp: expected open-loop execution" in capsys.readouterr().err
