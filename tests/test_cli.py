"""The CLI's error policy: our input errors are one line and exit 2; bugs keep their traceback; --debug shows all."""

from __future__ import annotations

import pytest

from amortized import cli
from amortized.commands import shards
from rde.errors import InputError


def _failing(exc: BaseException):
    def run(args):
        raise exc

    return run


def test_bad_input_is_one_line_and_exit_2(monkeypatch, capsys):
    monkeypatch.setattr(shards, "run", _failing(InputError("photo.png: not an image")))
    assert cli.main(["shards", "somewhere"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "cartoonx shards: error: photo.png: not an image"


def test_debug_shows_the_traceback_of_an_input_error(monkeypatch):
    monkeypatch.setattr(shards, "run", _failing(InputError("bad value")))
    for argv in (["--debug", "shards", "somewhere"], ["shards", "somewhere", "--debug"]):
        with pytest.raises(InputError, match="bad value"):
            cli.main(argv)


@pytest.mark.parametrize("bug", [TypeError("object() takes no arguments"), KeyError("x"), RuntimeError("boom"),
                                 ValueError("expected a 4-D tensor")])  # a ValueError from inside a library
def test_a_bug_is_not_disguised_as_bad_input(monkeypatch, bug):
    monkeypatch.setattr(shards, "run", _failing(bug))
    with pytest.raises(type(bug)):
        cli.main(["shards", "somewhere"])
