import subprocess
import sys

from rlvr.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlvr", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_every_command():
    result = run_cli("--help")
    assert result.returncode == 0
    for name in ("train", "eval", "verify", "sandbox", "tasks", "demo"):
        assert f"    {name} " in result.stdout


def test_print_config_applies_overrides(capsys):
    assert main(["train", "--print-config", "rollout.group_size=16"]) == 0
    assert "group_size: 16  #" in capsys.readouterr().out


def test_bad_override_exits_2_with_a_message(capsys):
    assert main(["train", "--print-config", "rollout.temprature=0.5"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'rollout.temprature'" in err
    assert "Did you mean 'rollout.temperature'?" in err
