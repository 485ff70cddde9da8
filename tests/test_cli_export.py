"""`cartoonx export`: the plain initializer file of a training checkpoint, with the policy it records or changed."""

from __future__ import annotations

import torch

from amortized.checkpoint import read_initializer
from amortized.cli import main
from amortized.policy import StartPolicy


def test_export_writes_the_plain_file_with_the_recorded_policy(tmp_path, tiny_initializer_checkpoint, capsys):
    source = tmp_path / "trained.ckpt"  # a training checkpoint that records a policy other than the shipped one
    ckpt = torch.load(tiny_initializer_checkpoint, weights_only=False)
    ckpt["fastcartoonx"]["guard"]["keep"] = 0.45
    ckpt["fastcartoonx"]["warmup"]["steps"] = 11
    torch.save(ckpt, source)
    dest = tmp_path / "out" / "tiny.pt"
    assert main(["export", str(source), str(dest)]) == 0
    out = capsys.readouterr().out.strip()
    assert out.count("\n") == 0 and out.startswith(f"wrote {dest} (") and "KiB, tiny-test, preset tiny" in out
    plain = torch.load(dest, weights_only=True)  # no optimizer or loop state: only plain data
    assert "optimizer_states" not in plain and plain["classifier"] == "tiny-test"
    trained = ckpt["fastcartoonx"]
    assert plain["warmup"] == trained["warmup"] and plain["guard"] == trained["guard"]
    assert plain["guard"]["keep"] == 0.45 and plain["warmup"]["steps"] == 11
    for key, value in trained["state_dict"].items():
        assert torch.equal(plain["state_dict"][key], value), key
    policy = StartPolicy.from_dict(plain)
    assert f"{policy.warmup}, {policy.guard}" in out and "keep=0.45" in out and f"as {source} records it" in out
    assert not list(dest.parent.glob("*.tmp"))


def test_export_changes_only_the_named_policy_fields(tmp_path, tiny_initializer_checkpoint, capsys):
    dest = tmp_path / "tiny.pt"
    assert main(["export", str(tiny_initializer_checkpoint), str(dest), "--guard-keep", "0.5", "--prune-steps", "0",
                 "--guard-shrinks", ""]) == 0
    recorded = StartPolicy.from_dict(read_initializer(tiny_initializer_checkpoint))
    written = StartPolicy.from_dict(read_initializer(dest))
    assert written == recorded.replace(keep=0.5, prune_steps=0, shrinks=())
    assert written != recorded and "start policy changed from" in capsys.readouterr().out
    # an exported file can be exported again in place, with --overwrite; its other fields stay
    assert main(["export", str(dest), str(dest), "--overwrite", "--warmup-steps", "7"]) == 0
    assert StartPolicy.from_dict(read_initializer(dest)) == written.replace(steps=7)


def test_export_bad_input_is_one_line_and_exit_2(tmp_path, tiny_initializer_checkpoint, capsys):
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    existing = tmp_path / "existing.pt"
    existing.write_bytes(b"keep me")
    cases = [
        ([str(tmp_path / "missing.ckpt"), str(tmp_path / "a.pt")], "missing.ckpt"),
        ([str(foreign), str(tmp_path / "a.pt")], "foreign.pt: not a FastCartoonX initializer checkpoint"),
        ([str(tiny_initializer_checkpoint), str(tmp_path)], "is a folder"),
        ([str(tiny_initializer_checkpoint), str(existing)], "pass --overwrite"),
        ([str(tiny_initializer_checkpoint), str(tmp_path / "a.pt"), "--guard-shrinks", "0.2,1.5"],
         "guard shrinks must lie in (0, 1)"),
        ([str(tiny_initializer_checkpoint), str(tmp_path / "a.pt"), "--warmup-steps", "-1"],
         "warm-up steps must be an int >= 0"),
    ]
    for argv, message in cases:
        assert main(["export", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("cartoonx export: error: ") and message in err, err
    assert existing.read_bytes() == b"keep me" and not (tmp_path / "a.pt").exists()
