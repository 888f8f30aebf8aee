"""Signed approvals: keygen, approve, verify — driven through the real `psbridge` command.

The property under test is the board's guarantee: once a package is approved, any change
to any change-defining byte, any missing or extra file, or any approval that is stale,
untrusted, forged, copied or self-issued makes `verify` refuse, and says why.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from datetime import timedelta
from pathlib import Path

import pytest

from psbridge import approvals, clock
from psbridge import keys as keymod
from psbridge.package import read_package

from psbridge.catalogue import MSONLINE_STEPS, PROBES, probe_file

from support.packages import approvals_of
from support.winrm_peer.package import make_package

STEP_FILES = tuple(s.file for s in MSONLINE_STEPS)
PACKAGE_FILES = ("plan.json", "REVIEW.md", "setup.ps1", "lock.ps1", *STEP_FILES, *(probe_file(p) for p in PROBES),
                 "rollback/06-spn.ps1", "rollback/07-crm-settings.ps1")


# --------------------------------------------------------------------------- keygen


def test_keygen_writes_private_0600_public_with_identity_and_true_fingerprint(psbridge, tmp_path: Path) -> None:
    result = psbridge("keygen", "--out", "k", "--name", "Jane Doe <jane@contoso.com>", "--no-passphrase")
    assert result.exit_code == 0, result.stderr
    private, public = tmp_path / "k" / "jane-doe.key", tmp_path / "k" / "jane-doe.pub.json"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) & 0o077 == 0o044  # readable by others, writable by none
    pem = private.read_bytes()
    assert pem.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")  # unencrypted only with --no-passphrase
    data = json.loads(public.read_text())
    assert data["identity"] == "Jane Doe <jane@contoso.com>"
    assert data["algorithm"] == "ed25519"
    raw = base64.b64decode(data["public_key"])
    assert data["fingerprint"] == hashlib.sha256(raw).hexdigest() == result.stdout.split("fingerprint:")[1].strip()
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_ssh_private_key(pem, password=None)
    assert key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == raw
    assert not list((tmp_path / "k").glob(".*tmp"))  # no temporary files left behind


def test_keygen_refuses_overwrite_without_force_and_replaces_with_it(psbridge, tmp_path: Path) -> None:
    assert psbridge("keygen", "--out", "k", "--name", "Jane <j@x>", "--no-passphrase").exit_code == 0
    before = (tmp_path / "k" / "jane.key").read_bytes()
    again = psbridge("keygen", "--out", "k", "--name", "Jane <j@x>", "--no-passphrase")
    assert again.exit_code == 2
    assert "jane.key: exists; use --force" in again.stderr and "Traceback" not in again.stderr
    assert (tmp_path / "k" / "jane.key").read_bytes() == before
    forced = psbridge("keygen", "--out", "k", "--name", "Jane <j@x>", "--force", "--no-passphrase")
    assert forced.exit_code == 0
    assert (tmp_path / "k" / "jane.key").read_bytes() != before
    assert stat.S_IMODE((tmp_path / "k" / "jane.key").stat().st_mode) == 0o600


def test_keygen_encrypts_with_passphrase_from_env_and_approve_uses_it(psbridge, tmp_path: Path, pkg: Path) -> None:
    env = {"PSBRIDGE_KEY_PASSPHRASE": "correct horse battery"}
    result = psbridge("keygen", "--out", "k", "--name", "Bob <bob@x>", env=env)
    assert result.exit_code == 0, result.stderr
    assert "encrypted" in result.stdout and "NOT encrypted" not in result.stdout
    pem = (tmp_path / "k" / "bob.key").read_bytes()
    assert pem.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    from cryptography.hazmat.primitives import serialization

    with pytest.raises(TypeError):
        serialization.load_ssh_private_key(pem, password=None)
    serialization.load_ssh_private_key(pem, password=b"correct horse battery")

    no_secret = psbridge("approve", pkg, "--key", "k/bob.key")
    assert no_secret.exit_code == 2 and "PSBRIDGE_KEY_PASSPHRASE" in no_secret.stderr
    wrong = psbridge("approve", pkg, "--key", "k/bob.key", env={"PSBRIDGE_KEY_PASSPHRASE": "xyzzy-not-it"})
    assert wrong.exit_code == 2 and "wrong passphrase" in wrong.stderr
    assert not approvals_of(pkg)
    ok = psbridge("approve", pkg, "--key", "k/bob.key", env=env)
    assert ok.exit_code == 0, ok.stderr
    assert len(approvals_of(pkg)) == 1
    log = (tmp_path / "output" / "audit.jsonl").read_text()
    assert "correct horse" not in log and "xyzzy-not-it" not in log
    assert [json.loads(line)["outcome"] for line in log.splitlines()] == ["error", "error", "approved"]


def test_keygen_passphrase_flag_never_prompts_without_a_terminal(psbridge, tmp_path: Path) -> None:
    result = psbridge("keygen", "--out", "k", "--name", "Bob <bob@x>", "--passphrase")
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "PSBRIDGE_KEY_PASSPHRASE" in result.stderr
    assert not (tmp_path / "k").exists() or not any((tmp_path / "k").iterdir())


@pytest.mark.parametrize("name", ["", "  ", "two\nlines", "x" * 201])
def test_keygen_rejects_bad_identity(psbridge, name: str) -> None:
    result = psbridge("keygen", "--out", "k", "--name", name)
    assert result.exit_code == 2 and "--name" in result.stderr


# --------------------------------------------------------------------------- approve


def test_approve_then_verify_accepts_and_names_the_approval(psbridge, pkg: Path, keys: dict[str, Path]) -> None:
    result = psbridge("approve", pkg, "--key", keys["jane"], "--comment", "CHG-4711", "--expires", "2d")
    assert result.exit_code == 0, result.stderr
    [file] = approvals_of(pkg)
    record = json.loads(file.read_text())
    assert record["approver"] == "Jane Doe <jane@contoso.com>"
    assert record["package"] == "contoso" and record["digest"] == read_package(pkg).digest
    assert record["comment"] == "CHG-4711"
    assert clock.parse_time(record["expires_at"]) - clock.parse_time(record["approved_at"]) == timedelta(days=2)
    assert record["fingerprint"] == hashlib.sha256(base64.b64decode(record["public_key"])).hexdigest()
    assert stat.S_IMODE(file.stat().st_mode) == 0o644

    verified = psbridge("verify", pkg, "--trusted-keys", keys["trusted"])
    assert verified.exit_code == 0, verified.stderr
    assert read_package(pkg).digest in verified.stdout and "Jane Doe" in verified.stdout


def test_approving_twice_with_the_same_key_adds_nothing(psbridge, pkg: Path, keys: dict[str, Path]) -> None:
    assert psbridge("approve", pkg, "--key", keys["jane"]).exit_code == 0
    again = psbridge("approve", pkg, "--key", keys["jane"])
    assert again.exit_code == 0 and "nothing added" in again.stdout
    assert len(approvals_of(pkg)) == 1


@pytest.mark.parametrize("expires", ["0d", "91d", "7x", "d", "-1h", "2200h"])
def test_approve_rejects_bad_expiry(psbridge, pkg: Path, keys: dict[str, Path], expires: str) -> None:
    result = psbridge("approve", pkg, "--key", keys["jane"], "--expires", expires)
    assert result.exit_code == 2 and "--expires" in result.stderr
    assert not approvals_of(pkg)


@pytest.mark.parametrize("text,delta", [("30m", timedelta(minutes=30)), ("12h", timedelta(hours=12)),
                                        ("90d", timedelta(days=90))])
def test_parse_validity_units(text: str, delta: timedelta) -> None:
    assert approvals.parse_validity(text) == delta


def test_approve_refuses_a_package_that_differs_from_its_plan(psbridge, pkg: Path, keys: dict[str, Path]) -> None:
    (pkg / "steps" / "06-spn.ps1").write_bytes(b"Remove-Everything\r\n")
    result = psbridge("approve", pkg, "--key", keys["jane"])
    assert result.exit_code == 2 and "steps/06-spn.ps1" in result.stderr
    assert not approvals_of(pkg)


def test_approve_refuses_a_public_key_file_for_another_key(psbridge, pkg: Path, keys: dict[str, Path],
                                                           tmp_path: Path) -> None:
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "jane-doe.key").write_bytes(keys["jane"].read_bytes())
    os.chmod(mixed / "jane-doe.key", 0o600)
    (mixed / "jane-doe.pub.json").write_bytes((keys["bob"].parent / "bob-roe.pub.json").read_bytes())
    result = psbridge("approve", pkg, "--key", mixed / "jane-doe.key")
    assert result.exit_code == 2 and "different key" in result.stderr


# --------------------------------------------------------------------------- verify: tampering


def _flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("rel", PACKAGE_FILES)
def test_changing_any_byte_of_any_file_after_approval_is_refused_naming_the_file(
    psbridge, pkg: Path, keys: dict[str, Path], rel: str
) -> None:
    assert psbridge("approve", pkg, "--key", keys["jane"]).exit_code == 0
    assert psbridge("verify", pkg, "--trusted-keys", keys["trusted"]).exit_code == 0
    _flip_middle_byte(pkg / rel)
    result = psbridge("verify", pkg, "--trusted-keys", keys["trusted"])
    if rel == "plan.json":  # unreadable JSON (exit 2) or a plan that no longer fits its files (exit 1)
        assert result.exit_code in (1, 2) and "plan.json" in result.stderr
        return
    assert result.exit_code == 1
    assert rel in result.stderr
    assert "too few approvals" in result.stderr
    if rel != "plan.json":  # plan.json holds the other hashes; its own change shows through the approval's listing
        assert f"changed file: {rel}" in result.stderr
    assert "changed since approval: " + rel in result.stderr


@pytest.mark.parametrize("rel", PACKAGE_FILES[1:])
def test_missing_file_is_refused(psbridge, pkg: Path, keys: dict[str, Path], rel: str) -> None:
    assert psbridge("approve", pkg, "--key", keys["jane"]).exit_code == 0
    (pkg / rel).unlink()
    result = psbridge("verify", pkg, "--trusted-keys", keys["trusted"])
    assert result.exit_code == 1 and f"missing file: {rel}" in result.stderr


@pytest.mark.parametrize("rel", ["steps/09-extra.ps1", "extra.ps1", "steps/sub/x.ps1", "REVIEW.md.bak"])
def test_unexpected_file_is_refused(psbridge, pkg: Path, keys: dict[str, Path], rel: str) -> None:
    assert psbridge("approve", pkg, "--key", keys["jane"]).exit_code == 0
    (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
    (pkg / rel).write_text("Write-Host hi\n")
    result = psbridge("verify", pkg, "--trusted-keys", keys["trusted"])
    assert result.exit_code == 1 and f"unexpected file: {rel}" in result.stderr


def test_symbolic_link_in_package_is_refused(psbridge, pkg: Path, keys: dict[str, Path]) -> None:
    assert psbridge("approve", pkg, "--key", keys["jane"]).exit_code == 0
    (pkg / "steps" / "link.ps1").symlink_to(pkg / "setup.ps1")
    result = psbridge("verify", pkg, "--trusted-keys", keys["trusted"])
    assert result.exit_code == 2 and "link.ps1" in result.stderr and "symbolic link" in result.stderr


def test_run_records_do_not_affect_verification(psbridge, pkg: Path, keys: dict[str, Path]) -> None:
    assert psbridge("approve", pkg, "--key", keys["jane"]).exit_code == 0
    (pkg / "runs").mkdir()
    (pkg / "runs" / "20261127T000000Z.jsonl").write_text('{"step": 1}\n')
    assert psbridge("verify", pkg, "--trusted-keys", keys["trusted"]).exit_code == 0


# --------------------------------------------------------------------------- verify: approvals


def _approve_at(pkg: Path, key: Path, ago: timedelta, validity: timedelta) -> Path:
    """A genuinely signed approval made `ago` in the past (the CLI only signs 'now')."""
    result = approvals.approve_package(read_package(pkg), key, validity, "", now=clock.utc_now() - ago)
    return result.path


def test_expired_approval_is_refused(psbridge, pkg: Path, keys: dict[str, Path]) -> None:
    path = _approve_at(pkg, keys["jane"], timedelta(days=8), timedelta(days=7))
    result = psbridge("verify", pkg, "--trusted-keys", keys["trusted"])
    assert result.exit_code == 1
    assert f"approvals/{path.name}" in result.stderr and "expired" in result.stderr
    assert "too few approvals" in result.stderr


def test_expired_approval_does_not_block_a_fresh_one(psbridge, pkg: Path, keys: dict[str, Path]) -> None:
    _approve_at(pkg, keys["jane"], timedelta(days=8), timedelta(days=7))
    assert psbridge("approve", pkg, "--key", keys["jane"]).exit_code == 0  # expired one doesn't count as "already"
    result = psbridge("verify", pkg, "--trusted-keys", keys["trusted"])
    assert result.exit_code == 0 and "expired" in result.stdout  # reported as a note


def test_approval_dated_in_the_future_is_refused(psbridge, pkg: Path, keys: dict[str, Path]) -> None:
    _approve_at(pkg, keys["jane"], -timedelta(hours=2), timedelta(days=1))
    result = psbridge("verify", pkg, "--trusted-keys", keys["trusted"])
    assert result.exit_code == 1 and "not yet valid" in result.stderr


def test_untrusted_key_is_refused(psbridge, pkg: Path, keys: dict[str, Path]) -> None:
    assert psbridge("approve", pkg, "--key", keys["mallory"]).exit_code == 0
    result = psbridge("verify", pkg, "--trusted-keys", keys["trusted"])
    assert result.exit_code == 1
    assert "Mallory" in result.stderr and "untrusted key" in result.stderr and "too few" in result.stderr


def test_trusted_key_under_another_identity_is_refused(psbridge, pkg: Path, keys: dict[str, Path],
                                                       tmp_path: Path) -> None:
    assert psbridge("approve", pkg, "--key", keys["jane"]).exit_code == 0
    board = tmp_path / "board"
    board.mkdir()
    data = json.loads((keys["trusted"] / "jane.pub.json").read_text())
    data["identity"] = "Janet Other <janet@contoso.com>"
    (board / "janet.pub.json").write_text(json.dumps(data))
    result = psbridge("verify", pkg, "--trusted-keys", board)
    assert result.exit_code == 1 and "identity mismatch" in result.stderr


def test_altered_approval_is_refused_as_bad_signature(psbridge, pkg: Path, keys: dict[str, Path]) -> None:
    assert psbridge("approve", pkg, "--key", keys["jane"], "--expires", "1h").exit_code == 0
    [file] = approvals_of(pkg)
    record = json.loads(file.read_text())
    record["expires_at"] = "2099-01-01T00:00:00Z"
    file.write_text(json.dumps(record))
    result = psbridge("verify", pkg, "--trusted-keys", keys["trusted"])
    assert result.exit_code == 1 and f"approvals/{file.name}" in result.stderr and "bad signature" in result.stderr


def test_forged_signature_with_a_trusted_public_key_never_counts_and_is_named(
    psbridge, pkg: Path, keys: dict[str, Path]
) -> None:
    assert psbridge("approve", pkg, "--key", keys["bob"]).exit_code == 0
    assert psbridge("approve", pkg, "--key", keys["mallory"]).exit_code == 0
    forged_file = next(p for p in approvals_of(pkg) if "Mallory" in p.read_text())
    record = json.loads(forged_file.read_text())
    jane = json.loads((keys["trusted"] / "jane.pub.json").read_text())
    record.update(approver=jane["identity"], public_key=jane["public_key"], fingerprint=jane["fingerprint"])
    forged_file.write_text(json.dumps(record))  # Mallory's signature, Jane's name and key
    result = psbridge("verify", pkg, "--trusted-keys", keys["trusted"])
    # Bob's approval counts; the forgery is named but cannot block (whoever can write approvals/
    # could as well delete the good ones) and never counts as Jane's.
    assert result.exit_code == 0 and "bad signature" in result.stdout and forged_file.name in result.stdout
    refused = psbridge("verify", pkg, "--trusted-keys", keys["trusted"], "--min-approvals", "2")
    assert refused.exit_code == 1 and "too few approvals: 1 valid" in refused.stderr


def test_unsigned_extra_field_in_approval_is_refused(psbridge, pkg: Path, keys: dict[str, Path]) -> None:
    assert psbridge("approve", pkg, "--key", keys["jane"]).exit_code == 0
    [file] = approvals_of(pkg)
    record = json.loads(file.read_text())
    record["scope"] = "everything"
    file.write_text(json.dumps(record))
    result = psbridge("verify", pkg, "--trusted-keys", keys["trusted"])
    assert result.exit_code == 1 and "malformed" in result.stderr and "scope" in result.stderr


def test_too_few_approvals(psbridge, pkg: Path, keys: dict[str, Path]) -> None:
    assert psbridge("approve", pkg, "--key", keys["jane"]).exit_code == 0
    result = psbridge("verify", pkg, "--trusted-keys", keys["trusted"], "--min-approvals", "2")
    assert result.exit_code == 1
    assert "too few approvals: 1 valid trusted approval(s) by distinct people of the current digest, 2 required" in \
        " ".join(result.stderr.split())  # refusals wrap at 100 columns (issue 21)
    assert psbridge("approve", pkg, "--key", keys["bob"]).exit_code == 0
    assert psbridge("verify", pkg, "--trusted-keys", keys["trusted"], "--min-approvals", "2").exit_code == 0


def test_two_approvals_by_one_key_count_once(psbridge, pkg: Path, keys: dict[str, Path]) -> None:
    _approve_at(pkg, keys["jane"], timedelta(hours=1), timedelta(days=1))
    (pkg / "approvals" / "copy.json").write_bytes(approvals_of(pkg)[0].read_bytes())
    assert len(approvals_of(pkg)) == 2
    result = psbridge("verify", pkg, "--trusted-keys", keys["trusted"], "--min-approvals", "2")
    assert result.exit_code == 1 and "too few approvals: 1 valid" in result.stderr


@pytest.mark.parametrize("form", ["public", "private", "private-alone", "fingerprint"])
def test_self_approval_is_refused_when_forbidden(psbridge, pkg: Path, keys: dict[str, Path], form: str,
                                                 tmp_path: Path) -> None:
    assert psbridge("approve", pkg, "--key", keys["jane"]).exit_code == 0
    pub = keys["jane"].parent / "jane-doe.pub.json"
    alone = tmp_path / "operator.pem"
    alone.write_bytes(keys["jane"].read_bytes())
    spec = {"public": str(pub), "private": str(keys["jane"]), "private-alone": str(alone),
            "fingerprint": json.loads(pub.read_text())["fingerprint"]}[form]
    result = psbridge("verify", pkg, "--trusted-keys", keys["trusted"], "--forbid-key", spec)
    assert result.exit_code == 1 and "forbidden approver" in result.stderr and "Jane Doe" in result.stderr
    assert psbridge("approve", pkg, "--key", keys["bob"]).exit_code == 0
    assert psbridge("verify", pkg, "--trusted-keys", keys["trusted"], "--forbid-key", spec).exit_code == 0


def test_approval_copied_from_another_package_is_refused(psbridge, tmp_path: Path, pkg: Path,
                                                         keys: dict[str, Path]) -> None:
    other = make_package(tmp_path / "elsewhere", name="fabrikam")
    assert psbridge("approve", other, "--key", keys["jane"]).exit_code == 0
    (pkg / "approvals").mkdir()
    [file] = approvals_of(other)
    (pkg / "approvals" / file.name).write_bytes(file.read_bytes())
    result = psbridge("verify", pkg, "--trusted-keys", keys["trusted"])
    assert result.exit_code == 1
    assert "other package: approves package 'fabrikam', this is 'contoso'" in result.stderr


def test_approval_of_a_same_named_package_with_other_content_is_refused(psbridge, tmp_path: Path, pkg: Path,
                                                                        keys: dict[str, Path]) -> None:
    other = make_package(tmp_path / "elsewhere", crm={"root_domain": "*.fabrikam.com"})
    assert psbridge("approve", other, "--key", keys["jane"]).exit_code == 0
    (pkg / "approvals").mkdir()
    [file] = approvals_of(other)
    (pkg / "approvals" / file.name).write_bytes(file.read_bytes())
    result = psbridge("verify", pkg, "--trusted-keys", keys["trusted"])
    assert result.exit_code == 1 and "other digest" in result.stderr and "steps/06-spn.ps1" in result.stderr


def test_stray_file_in_approvals_is_named_but_cannot_block(psbridge, pkg: Path, keys: dict[str, Path]) -> None:
    assert psbridge("approve", pkg, "--key", keys["jane"]).exit_code == 0
    (pkg / "approvals" / "note.txt").write_text("approved by phone\n")
    result = psbridge("verify", pkg, "--trusted-keys", keys["trusted"])
    # named, but it can't block: whoever can write approvals/ could delete the good approvals as well
    assert result.exit_code == 0 and "unexpected file: approvals/note.txt" in result.stdout
    refused = psbridge("verify", pkg, "--trusted-keys", keys["trusted"], "--min-approvals", "2")
    assert refused.exit_code == 1 and "unexpected file: approvals/note.txt" in refused.stderr


@pytest.mark.parametrize("case", ["no-folder", "empty-folder", "bad-key-file", "not-a-package"])
def test_bad_input_is_exit_2(psbridge, tmp_path: Path, pkg: Path, keys: dict[str, Path], case: str) -> None:
    trusted: Path = keys["trusted"]
    target = pkg
    if case == "no-folder":
        trusted = tmp_path / "nope"
    elif case == "empty-folder":
        trusted = tmp_path / "empty"
        trusted.mkdir()
    elif case == "bad-key-file":
        trusted = tmp_path / "bad"
        trusted.mkdir()
        (trusted / "x.pub.json").write_text("{not json")
    else:
        target = tmp_path
    result = psbridge("verify", target, "--trusted-keys", trusted)
    assert result.exit_code == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.startswith("psbridge: error:")


def test_verify_and_approve_are_audited_without_secrets(psbridge, tmp_path: Path, pkg: Path,
                                                        keys: dict[str, Path]) -> None:
    log = tmp_path / "audit" / "a.jsonl"
    assert psbridge("approve", pkg, "--key", keys["jane"], "--audit-log", log).exit_code == 0
    assert psbridge("verify", pkg, "--trusted-keys", keys["trusted"], "--audit-log", log).exit_code == 0
    assert psbridge("verify", pkg, "--trusted-keys", keys["trusted"], "--min-approvals", "2",
                    "--audit-log", log).exit_code == 1
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["action"], e["outcome"]) for e in entries] == [
        ("approve", "approved"), ("verify", "verified"), ("verify", "refused")]
    assert entries[0]["details"]["approver"] == "Jane Doe <jane@contoso.com>"
    assert all(e["package"] == "contoso" and e["digest"] == read_package(pkg).digest for e in entries)
    assert entries[1]["details"]["approvals"][0]["fingerprint"] == entries[0]["details"]["fingerprint"]
    assert "too few approvals" in entries[2]["details"]["reasons"][-1]
    assert "PRIVATE KEY" not in log.read_text()
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert psbridge("audit", "verify", log).exit_code == 0


def test_default_audit_log_is_output_audit_jsonl(psbridge, tmp_path: Path, pkg: Path, keys: dict[str, Path]) -> None:
    assert psbridge("approve", pkg, "--key", keys["jane"]).exit_code == 0
    assert json.loads((tmp_path / "output" / "audit.jsonl").read_text())["action"] == "approve"


# --------------------------------------------------------------------------- the library entry point for `run`


def test_verify_package_library_reports_approvals_used(pkg: Path, keys: dict[str, Path]) -> None:
    approvals.approve_package(read_package(pkg), keys["jane"], timedelta(days=1))
    approvals.approve_package(read_package(pkg), keys["bob"], timedelta(days=1))
    result = approvals.verify_package(read_package(pkg), approvals.ApprovalPolicy(keys["trusted"], 2))
    assert result.ok and result.reasons == [] and result.digest == read_package(pkg).digest
    assert sorted(a.approver for a in result.approvals_used) == ["Bob Roe <bob@contoso.com>", "Jane Doe <jane@contoso.com>"]
    jane_fp = json.loads((keys["trusted"] / "jane.pub.json").read_text())["fingerprint"]
    refused = approvals.verify_package(read_package(pkg), approvals.ApprovalPolicy(keys["trusted"], 2, (jane_fp,)))
    assert not refused.ok and refused.approvals_used == []
    assert any("forbidden approver" in r for r in refused.reasons)


def test_approval_whose_signed_listing_disagrees_with_the_package_is_refused(pkg: Path, keys: dict[str, Path]) -> None:
    """A correctly signed approval of the right digest but another file list (a buggy or hostile signer)."""
    key, public = keymod.load_private_key(keys["jane"])
    result = approvals.approve_package(read_package(pkg), keys["jane"], timedelta(days=1))
    record = dict(result.record)
    record["files"] = {**record["files"], "steps/06-spn.ps1": "0" * 64}
    record["signature"] = base64.b64encode(key.sign(approvals.signed_message(record))).decode()
    result.path.write_text(json.dumps(record))
    verdict = approvals.verify_package(read_package(pkg), approvals.ApprovalPolicy(keys["trusted"]))
    assert not verdict.ok
    assert any("signed file list differs from the package: steps/06-spn.ps1" in r for r in verdict.reasons)


# --------------------------------------------------------------------------- hidden trusted keys (issue 20, item 8)


def test_a_hidden_key_in_the_trusted_folder_is_ignored_and_named(psbridge, pkg: Path, keys: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    """`ls` does not show `.mallory.pub.json`; it must not make Mallory's approval count."""
    board = tmp_path / "board"
    board.mkdir()
    for item in keys["trusted"].iterdir():
        (board / item.name).write_bytes(item.read_bytes())
    (board / ".mallory.pub.json").write_bytes(keys["mallory"].with_name("mallory.pub.json").read_bytes())
    assert psbridge("approve", pkg, "--key", keys["mallory"]).exit_code == 0
    result = psbridge("verify", pkg, "--trusted-keys", board)
    assert result.exit_code == 1 and "untrusted key" in result.stderr
    notices = [line for line in result.stdout.replace("\n    ", " ").splitlines() if ".mallory.pub.json" in line]
    assert len(notices) == 1 and "ignored" in notices[0] and "hidden" in notices[0]
    assert psbridge("approve", pkg, "--key", keys["jane"]).exit_code == 0
    verified = psbridge("verify", pkg, "--trusted-keys", board)
    assert verified.exit_code == 0, verified.stderr
    trusted_lines = [line for line in verified.stdout.splitlines() if line.startswith("trusted key:")]
    assert len(trusted_lines) == 2  # jane and bob, each named; not mallory
    assert any("jane.pub.json" in line and "Jane Doe" in line for line in trusted_lines)
    assert any("bob.pub.json" in line and "Bob Roe" in line for line in trusted_lines)
    assert not any("allory" in line for line in trusted_lines)


def test_load_trusted_keys_skips_dotfiles(keys: dict[str, Path], tmp_path: Path) -> None:
    board = tmp_path / "board"
    board.mkdir()
    (board / "jane.pub.json").write_bytes((keys["trusted"] / "jane.pub.json").read_bytes())
    (board / ".mallory.pub.json").write_bytes(keys["mallory"].with_name("mallory.pub.json").read_bytes())
    folder = keymod.read_trusted_folder(board)
    assert [k.identity for k in folder.keys.values()] == ["Jane Doe <jane@contoso.com>"]
    assert folder.hidden == [".mallory.pub.json"]
    assert list(keymod.load_trusted_keys(board)) == list(folder.keys)


def test_a_planted_file_name_with_backticks_is_not_shown_as_a_command_to_copy(psbridge, pkg, keys) -> None:
    """Text between backticks is a command the screen prints whole on its own line; a name from approvals/
    must not become one (``note `psbridge run X --yes --force-unlock` .json`` would read as advice)."""
    from support.packages import approvals_of

    assert psbridge("approve", pkg, "--key", keys["mallory"]).exit_code == 0  # not trusted: verify refuses
    [good] = approvals_of(pkg)
    planted = good.parent / "note `psbridge run X --yes --force-unlock` .json"
    planted.write_text("{}", encoding="utf-8")
    result = psbridge("verify", pkg, "--trusted-keys", keys["trusted"])
    assert result.exit_code == 1, result.stderr
    lines = (result.stdout + result.stderr).splitlines()
    assert not any(line.strip().startswith("psbridge run X") for line in lines), lines
    assert any("note \\x60psbridge run X --yes --force-unlock\\x60 .json" in line for line in lines), lines


def test_the_hidden_key_notice_reads_as_one_notice_at_100_columns(psbridge, pkg: Path, keys: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    """At 100 columns the notice wrapped onto four lines with `ls` alone on one: text between backticks is
    printed whole on a line of its own, as a command to copy. It is a sentence: no line of it is a command."""
    board = tmp_path / "board"
    board.mkdir()
    for item in keys["trusted"].iterdir():
        (board / item.name).write_bytes(item.read_bytes())
    (board / ".mallory.pub.json").write_bytes(keys["mallory"].with_name("mallory.pub.json").read_bytes())
    assert psbridge("approve", pkg, "--key", keys["jane"]).exit_code == 0
    result = psbridge("verify", pkg, "--trusted-keys", "board", env={"COLUMNS": "100"})  # cwd: tmp_path
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("note: --trusted-keys board: "))
    end = next(i for i, line in enumerate(lines) if i > start and not line.startswith("    "))
    notice = lines[start:end]
    assert all(len(line) <= 100 for line in notice), notice
    # one sentence of about 140 characters: two lines, word-wrapped, no line of it set apart as a command
    assert len(notice) == 2 and all(line.strip() not in ("ls", "`ls`") for line in notice), notice
    text = " ".join(line.strip() for line in notice)
    assert text.startswith("note: --trusted-keys board: ignored hidden file(s) .mallory.pub.json: "), text
    assert "`" not in result.stdout  # nothing of it is shown as a command to copy


def test_a_hidden_key_file_name_with_backticks_is_not_a_command_in_the_notice(keys: dict[str, Path],
                                                                              tmp_path: Path) -> None:
    """The hidden file's name is whoever wrote the folder's: backticks in it would make a command of it."""
    board = tmp_path / "board"
    board.mkdir()
    (board / "jane.pub.json").write_bytes((keys["trusted"] / "jane.pub.json").read_bytes())
    (board / ".x `psbridge run X --yes` .pub.json").write_bytes(b"{}")
    notice = keymod.read_trusted_folder(board).notice(board)
    assert notice is not None and "`" not in notice and "\\x60psbridge run X --yes\\x60" in notice
