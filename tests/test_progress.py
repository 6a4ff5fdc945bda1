"""The live status line: shown on a terminal, silent otherwise, cleared before log lines."""

from __future__ import annotations

import io

from golf_core.progress import Progress, training_line
from golf_core.train import RunLog


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_live_line_rewrites_in_place_on_a_terminal():
    stream = FakeTTY()
    p = Progress(stream=stream, min_interval=0.0)
    p.show("train step 1/10")
    p.show("train step 2/10")
    p.done()
    out = stream.getvalue()
    assert out.count("\r") >= 3 and "train step 2/10" in out and "\n" not in out


def test_silent_when_not_a_terminal():
    stream = io.StringIO()
    p = Progress(stream=stream, min_interval=0.0)
    p.show("anything")
    p.done()
    assert stream.getvalue() == ""


def test_training_line_has_step_loss_speed_and_remaining_time():
    line = training_line(50, 200, 3.21, 12345.0, 12.0, 600.0)
    assert "50/200" in line and "3.2100" in line and "12,345 tok/s" in line and "588s left" in line
    assert "left" not in training_line(50, 200, 3.21, 1.0, 12.0, 0.0)


def test_runlog_clears_the_live_line_before_printing(tmp_path):
    printed = []
    log = RunLog(tmp_path / "train.log", console=True, echo=printed.append)
    stream = FakeTTY()
    log.progress = Progress(stream=stream, min_interval=0.0)
    log.live("train step 3/10")
    log("step:3/10 train_loss:1.0")
    log.close()
    assert printed == ["step:3/10 train_loss:1.0"]
    assert stream.getvalue().endswith("\r")  # the live line was wiped first
    assert (tmp_path / "train.log").read_text() == "step:3/10 train_loss:1.0\n"
