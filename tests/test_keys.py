"""Approver keys (generator/keys.py): how private keys are protected, which public key files a
board's trusted-keys folder may hold, and what a key says about the person who holds it.

Most tests drive the real `psbridge` command. Tests that only need *some* encrypted key make
it through the library with `kdf_rounds=1` (`fast_key`), so the suite does not pay for the
bcrypt cost of real keys; the product has no switch that lowers it.
"""

from __future__ import annotations

import ast
import base64
import json
import os
import stat
import struct
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from psbridge import keys
from psbridge.errors import UserError

PASSPHRASE = "correct horse battery staple"
ENV = {"PSBRIDGE_KEY_PASSPHRASE": PASSPHRASE}


def openssh_header(pem: bytes) -> tuple[str, str, int | None]:
    """(cipher, kdf, bcrypt rounds) of an OpenSSH private key file, read by hand (PROTOCOL.key)."""
    lines = pem.decode("ascii").strip().splitlines()
    assert lines[0] == "-----BEGIN OPENSSH PRIVATE KEY-----" and lines[-1] == "-----END OPENSSH PRIVATE KEY-----"
    blob = base64.b64decode("".join(lines[1:-1]))
    magic = b"openssh-key-v1\0"
    assert blob.startswith(magic)
    rest = blob[len(magic):]

    def string(data: bytes) -> tuple[bytes, bytes]:
        (n,) = struct.unpack(">I", data[:4])
        return data[4:4 + n], data[4 + n:]

    cipher, rest = string(rest)
    kdf, rest = string(rest)
    options, rest = string(rest)
    rounds = None
    if kdf == b"bcrypt":
        _salt, tail = string(options)
        (rounds,) = struct.unpack(">I", tail)
    return cipher.decode(), kdf.decode(), rounds


def fast_key(folder: Path, name: str = "Jane Doe <jane@contoso.com>", passphrase: str | None = PASSPHRASE,
             ) -> keys.KeyPairFiles:
    """A key pair made through the library with 1 bcrypt round: quick to load in tests."""
    return keys.generate_keypair(folder, name, passphrase, kdf_rounds=1)


def legacy_pkcs8_pair(folder: Path, passphrase: str | None, name: str = "Old Timer <old@contoso.com>") -> Path:
    """A key pair as psbridge wrote it before: PKCS#8 PEM (PBKDF2-encrypted or plain) + .pub.json."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    folder.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    encryption = (serialization.BestAvailableEncryption(passphrase.encode()) if passphrase
                  else serialization.NoEncryption())
    private = folder / "old-timer.key"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    private.chmod(0o600)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    public = keys.PublicKey(name, raw, keys.fingerprint(raw))
    (folder / "old-timer.pub.json").write_text(json.dumps(public.to_json()))
    return private


def no_prompt() -> str:
    raise AssertionError("the passphrase was asked for")


# --------------------------------------------------------------------------- 1. private keys


def test_keygen_encrypts_by_default_in_openssh_format_with_bcrypt_pbkdf(psbridge, tmp_path: Path) -> None:
    result = psbridge("keygen", "--out", "k", "--name", "Jane Doe <jane@contoso.com>", env=ENV)
    assert result.exit_code == 0, result.stderr
    private = tmp_path / "k" / "jane-doe.key"
    pem = private.read_bytes()
    assert openssh_header(pem) == ("aes256-ctr", "bcrypt", keys.KDF_ROUNDS)
    assert keys.KDF_ROUNDS >= 64  # above ssh-keygen's default of 16
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert "NOT encrypted" not in result.stdout and "encrypted" in result.stdout
    assert PASSPHRASE not in result.stdout + result.stderr
    from cryptography.hazmat.primitives import serialization

    with pytest.raises(TypeError):
        serialization.load_ssh_private_key(pem, password=None)
    serialization.load_ssh_private_key(pem, password=PASSPHRASE.encode())
    key, public = keys.load_private_key(private, lambda: PASSPHRASE)
    assert public.identity == "Jane Doe <jane@contoso.com>" and public.path == tmp_path / "k" / "jane-doe.pub.json"


def test_keygen_without_terminal_passphrase_or_opt_out_exits_2_naming_both(psbridge, tmp_path: Path) -> None:
    result = psbridge("keygen", "--out", "k", "--name", "Jane <j@x>", subprocess=True)
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "PSBRIDGE_KEY_PASSPHRASE" in result.stderr and "--no-passphrase" in result.stderr
    assert not (tmp_path / "k").exists() or not any((tmp_path / "k").iterdir())


def test_keygen_no_passphrase_writes_an_unencrypted_key_and_says_so_loudly(psbridge, tmp_path: Path) -> None:
    result = psbridge("keygen", "--out", "k", "--name", "Jane <j@x>", "--no-passphrase")
    assert result.exit_code == 0, result.stderr
    assert "warning" in result.stderr and "NOT encrypted" in result.stderr and "jane.key" in result.stderr
    assert "NOT encrypted" in result.stdout
    assert openssh_header((tmp_path / "k" / "jane.key").read_bytes()) == ("none", "none", None)
    assert keys.load_private_key(tmp_path / "k" / "jane.key", no_prompt)[1].identity == "Jane <j@x>"


@pytest.mark.parametrize("args, env", [(["--no-passphrase"], ENV), (["--no-passphrase", "--passphrase"], {})])
def test_keygen_refuses_contradictory_passphrase_choices(psbridge, tmp_path: Path, args: list[str],
                                                         env: dict[str, str]) -> None:
    result = psbridge("keygen", "--out", "k", "--name", "Jane <j@x>", *args, env=env)
    assert result.exit_code == 2 and "--no-passphrase" in result.stderr
    assert PASSPHRASE not in result.stderr
    assert not (tmp_path / "k").exists()


def test_keygen_passphrase_flag_is_a_harmless_alias(psbridge, tmp_path: Path) -> None:
    result = psbridge("keygen", "--out", "k", "--name", "Jane <j@x>", "--passphrase", env=ENV)
    assert result.exit_code == 0, result.stderr
    assert openssh_header((tmp_path / "k" / "jane.key").read_bytes())[1] == "bcrypt"
    assert "--no-passphrase" in psbridge("keygen", "--help").stdout


def test_keygen_checks_the_name_before_asking_for_a_passphrase(psbridge) -> None:
    result = psbridge("keygen", "--out", "k", "--name", "two\nlines")
    assert result.exit_code == 2 and "--name" in result.stderr and "PSBRIDGE_KEY_PASSPHRASE" not in result.stderr


def test_real_keys_cost_at_least_the_chosen_rounds_and_stay_usable(tmp_path: Path) -> None:
    """The time a real (KDF_ROUNDS) key takes to load: noticeable for a guesser, fine for an approver."""
    made = keys.generate_keypair(tmp_path, "Jane <j@x>", PASSPHRASE)
    start = time.perf_counter()
    keys.load_private_key(made.private_key, lambda: PASSPHRASE)
    elapsed = time.perf_counter() - start
    assert openssh_header(made.private_key.read_bytes())[2] == keys.KDF_ROUNDS
    assert elapsed < 5.0  # ~0.3-0.6 s on a 2-core machine; generous for loaded CI runners


def test_wrong_passphrase_is_one_line_and_never_echoed(tmp_path: Path) -> None:
    made = fast_key(tmp_path)
    with pytest.raises(UserError) as caught:
        keys.load_private_key(made.private_key, lambda: "xyzzy-not-it")
    assert caught.value.problems == (f"--key {made.private_key}: wrong passphrase or damaged key",)


@pytest.mark.parametrize("passphrase", [None, "old secret"])
def test_legacy_pkcs8_keys_still_load_with_a_note_to_re_key(tmp_path: Path, capsys, passphrase: str | None) -> None:
    private = legacy_pkcs8_pair(tmp_path, passphrase)
    key, public = keys.load_private_key(private, (lambda: passphrase) if passphrase else no_prompt)
    assert public.identity == "Old Timer <old@contoso.com>"
    note = capsys.readouterr().err
    assert note.count("\n") == 1 and str(private) in note and "re-key" in note


def test_legacy_encrypted_key_approves_through_the_command(psbridge, tmp_path: Path) -> None:
    from support.packages import approvals_of
    from support.winrm_peer.package import make_package

    pkg = make_package(tmp_path / "output")
    private = legacy_pkcs8_pair(tmp_path / "k", "old secret")
    result = psbridge("approve", pkg, "--key", private, env={"PSBRIDGE_KEY_PASSPHRASE": "old secret"})
    assert result.exit_code == 0, result.stderr
    assert "PBKDF2" in result.stderr and "re-key" in result.stderr
    assert len(approvals_of(pkg)) == 1


@pytest.mark.parametrize("fmt", ["openssh", "openssh-plain", "pkcs8", "pkcs8-encrypted"])
@pytest.mark.parametrize("sibling", [True, False])
def test_key_fingerprint_reads_both_formats(tmp_path: Path, monkeypatch, fmt: str, sibling: bool) -> None:
    monkeypatch.setenv("PSBRIDGE_KEY_PASSPHRASE", PASSPHRASE)
    if fmt.startswith("openssh"):
        made = fast_key(tmp_path, passphrase=None if fmt == "openssh-plain" else PASSPHRASE)
        private, expected = made.private_key, made.fingerprint
    else:
        private = legacy_pkcs8_pair(tmp_path, PASSPHRASE if fmt == "pkcs8-encrypted" else None)
        expected = keys.load_public_key(keys.public_key_path_for(private)).fingerprint
    if not sibling:
        keys.public_key_path_for(private).unlink()
    assert keys.key_fingerprint(str(private)) == expected


def test_key_fingerprint_of_an_openssh_key_needs_no_passphrase(tmp_path: Path, monkeypatch) -> None:
    """The public half of an OpenSSH key file is not encrypted: naming your key to forbid it asks nothing."""
    monkeypatch.delenv("PSBRIDGE_KEY_PASSPHRASE", raising=False)
    made = fast_key(tmp_path)
    assert keys.key_fingerprint(str(made.private_key)) == made.fingerprint
    keys.public_key_path_for(made.private_key).unlink()
    assert keys.key_fingerprint(str(made.private_key)) == made.fingerprint


def test_key_fingerprint_refuses_a_private_key_whose_public_file_holds_another_key(tmp_path: Path) -> None:
    made = fast_key(tmp_path / "a")
    other = fast_key(tmp_path / "b")
    other.public_key.replace(made.public_key)
    with pytest.raises(UserError, match="holds a different key than"):
        keys.key_fingerprint(str(made.private_key))



def test_undecodable_passphrase_bytes_round_trip_without_an_exception(tmp_path: Path) -> None:
    """An environment variable with bytes that are not UTF-8 arrives as surrogate escapes."""
    secret = "pass\udcffword"
    made = keys.generate_keypair(tmp_path, "Jane <j@x>", secret, kdf_rounds=1)
    assert keys.load_private_key(made.private_key, lambda: secret)[1].fingerprint == made.fingerprint


def test_key_fingerprint_of_a_renamed_public_key_file(tmp_path: Path) -> None:
    made = fast_key(tmp_path)
    renamed = tmp_path / "jane.json"
    renamed.write_bytes(made.public_key.read_bytes())
    assert keys.key_fingerprint(str(renamed)) == made.fingerprint

def test_openssh_key_asking_for_absurd_rounds_is_refused_not_a_hang(tmp_path: Path) -> None:
    made = fast_key(tmp_path)
    lines = made.private_key.read_bytes().decode().strip().splitlines()
    blob = bytearray(base64.b64decode("".join(lines[1:-1])))
    at = blob.index(b"bcrypt") + len(b"bcrypt") + 4 + 4 + 16  # kdfoptions length, salt length, salt
    assert struct.unpack(">I", blob[at:at + 4]) == (1,)
    blob[at:at + 4] = struct.pack(">I", 2**31)
    body = base64.b64encode(bytes(blob)).decode()
    made.private_key.write_text(f"{lines[0]}\n{body}\n{lines[-1]}\n")
    with pytest.raises(UserError, match="bcrypt rounds"):
        keys.load_private_key(made.private_key, no_prompt)


def test_missing_bcrypt_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.serialization import ssh

    def no_bcrypt(*args: object, **kwargs: object) -> bytes:
        raise UnsupportedAlgorithm("Need bcrypt module")

    monkeypatch.setattr(ssh, "_bcrypt_kdf", no_bcrypt)
    with pytest.raises(UserError, match="bcrypt"):
        fast_key(tmp_path)
    assert not list(tmp_path.iterdir())


def test_keys_module_does_not_import_click() -> None:
    tree = ast.parse(Path(keys.__file__).read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any(name == "click" or name.startswith("click.") for name in imported)
    probe = subprocess.run([sys.executable, "-c", "import sys, psbridge.keys; print('click' in sys.modules)"],
                           capture_output=True, text=True, timeout=60, check=True)
    assert probe.stdout.strip() == "False"


# --------------------------------------------------------------------------- 2. people, not keys


def write_public(folder: Path, file: str, identity: str, raw: bytes | None = None) -> Path:
    """A .pub.json for `identity` with a fresh (or the given) Ed25519 public key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if raw is None:
        raw = Ed25519PrivateKey.generate().public_key().public_bytes(serialization.Encoding.Raw,
                                                                     serialization.PublicFormat.Raw)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file
    path.write_text(json.dumps(keys.PublicKey(identity, raw, keys.fingerprint(raw)).to_json(), ensure_ascii=False),
                    encoding="utf-8")
    return path


@pytest.mark.parametrize("identity, person", [
    ("Jane Doe <JANE@contoso.com>", "jane@contoso.com"),
    ("J. Doe < Jane@Contoso.COM >", "jane@contoso.com"),
    # Issue 20 item 2: an identity is its e-mail address; a name alone names nobody psbridge counts
    # (these were "jane doe", "josé pérez", "nobody <>" when names counted as people).
    ("Jane  Doe", None),
    ("  JANE\tDOE ", None),
    ("Jose\u0301 Pe\u0301rez", None),
    ("Jos\u00e9 P\u00e9rez", None),
    ("Stra\u00dfe <STRASSE@x.de>", "strasse@x.de"),
    ("Nobody <>", None),
    ("jane@contoso.com", "jane@contoso.com"),
    ("Jane <jane@b\u00fccher.de>", "jane@xn--bcher-kva.de"),  # IDNA domain in its ASCII form
    ("Jane <jane@\uff43\uff4f\uff4e\uff54\uff4f\uff53\uff4f.com>", "jane@contoso.com"),  # full-width domain: IDNA maps it
    ("Jane Doe <jane@contoso.com.>", None),  # trailing dot
    ("Jane Doe <j\u0430ne@contoso.com>", None),  # Cyrillic a in the local part
    ("Jane Doe <\uff4a\uff41\uff4e\uff45@contoso.com>", None),  # full-width local part
])
def test_identity_key_is_the_case_folded_email_or_the_normalised_name(identity: str, person: str | None) -> None:
    assert keys.identity_key(identity) == person
    assert keys.PublicKey(identity, b"\0" * 32, "0" * 64).person == person


def test_trusted_keys_folder_with_two_keys_for_one_person_is_refused_naming_both(psbridge, tmp_path: Path) -> None:
    from support.winrm_peer.package import make_package

    pkg = make_package(tmp_path / "output")
    board = tmp_path / "board"
    first = write_public(board, "jane.pub.json", "Jane Doe <jane@contoso.com>")
    second = write_public(board, "jane-laptop.pub.json", "J. Doe <JANE@Contoso.com>")
    write_public(board, "bob.pub.json", "Bob Roe <bob@contoso.com>")
    result = psbridge("verify", pkg, "--trusted-keys", board)
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert str(first) in result.stderr and str(second) in result.stderr
    assert "jane@contoso.com" in result.stderr and result.stderr.strip().count("\n") == 0


def test_the_same_key_twice_under_the_same_identity_is_one_key(tmp_path: Path) -> None:
    one = write_public(tmp_path, "jane.pub.json", "Jane Doe <jane@contoso.com>")
    (tmp_path / "jane-copy.pub.json").write_bytes(one.read_bytes())
    trusted = keys.load_trusted_keys(tmp_path)
    assert [k.person for k in trusted.values()] == ["jane@contoso.com"]


@pytest.mark.parametrize("identity", [
    "Jane Doe <jane@contoso.com>\nBob Roe <bob@contoso.com>",
    "\x1b[32mJane Doe\x1b[0m <jane@contoso.com>",
    "Jane \u202eeoD <jane@contoso.com>",    # right-to-left override
    "Ja\u200bne <jane@contoso.com>",         # zero-width space
    "Jane \u2066Doe\u2069 <jane@contoso.com>",  # bidi isolates
    "x" * 201,
    "   ",
])
def test_public_key_file_with_a_bad_identity_is_refused_naming_the_file(psbridge, tmp_path: Path,
                                                                        identity: str) -> None:
    from support.winrm_peer.package import make_package

    pkg = make_package(tmp_path / "output")
    bad = write_public(tmp_path / "board", "jane.pub.json", identity)
    result = psbridge("verify", pkg, "--trusted-keys", tmp_path / "board")
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert str(bad) in result.stderr and "identity" in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "\x1b" not in result.stderr and "\u202e" not in result.stderr


@pytest.mark.parametrize("name", ["Jane \u202eeoD", "Ja\u200bne", "Jane\u2066 Doe", "Jane\ufeff", "Jane\u00ad Doe"])
def test_keygen_refuses_unicode_format_characters_in_the_name(psbridge, tmp_path: Path, name: str) -> None:
    result = psbridge("keygen", "--out", "k", "--name", name, "--no-passphrase")
    assert result.exit_code == 2 and "--name" in result.stderr and name not in result.stderr
    assert not (tmp_path / "k").exists()


# --------------------------------------------------------------------------- 3. what may sit in a key folder


def run_with_deadline(*args: object, cwd: Path, seconds: float = 30, env: dict[str, str] | None = None):
    """`python -m psbridge ARGS` in a child process that must finish within `seconds` (a hang fails)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PSBRIDGE_")}
    full_env.update(env or {})
    try:
        return subprocess.run([sys.executable, "-m", "psbridge", *map(str, args)], cwd=cwd, env=full_env,
                              input="", capture_output=True, text=True, timeout=seconds)
    except subprocess.TimeoutExpired:
        pytest.fail(f"psbridge {' '.join(map(str, args))} hung for {seconds} s")


@pytest.fixture
def board(tmp_path: Path) -> Path:
    """A trusted-keys folder with one good key, and a package to verify against it."""
    from support.winrm_peer.package import make_package

    make_package(tmp_path / "output")
    write_public(tmp_path / "board", "bob.pub.json", "Bob Roe <bob@contoso.com>")
    return tmp_path / "board"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_in_the_trusted_keys_folder_is_refused_not_a_hang(tmp_path: Path, board: Path) -> None:
    os.mkfifo(board / "x.pub.json")
    result = run_with_deadline("verify", tmp_path / "output" / "contoso", "--trusted-keys", board, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{board / 'x.pub.json'}: not a regular file" in result.stderr


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_given_as_the_private_key_is_refused_not_a_hang(tmp_path: Path, board: Path) -> None:
    os.mkfifo(tmp_path / "jane.key")
    result = run_with_deadline("approve", tmp_path / "output" / "contoso", "--key", tmp_path / "jane.key",
                               cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"--key {tmp_path / 'jane.key'}: not a regular file" in result.stderr


@pytest.mark.parametrize("kind", ["folder", "symlink", "dangling-symlink", "huge"])
def test_other_non_key_entries_in_the_trusted_keys_folder_are_refused_naming_them(psbridge, tmp_path: Path,
                                                                                  board: Path, kind: str) -> None:
    entry = board / "x.pub.json"
    if kind == "folder":
        entry.mkdir()
        expected = "not a regular file (a folder)"
    elif kind == "symlink":
        target = write_public(tmp_path / "elsewhere", "jane.pub.json", "Jane Doe <jane@contoso.com>")
        entry.symlink_to(target)
        expected = "symbolic link"
    elif kind == "dangling-symlink":
        entry.symlink_to(tmp_path / "nowhere.pub.json")
        expected = "symbolic link"
    else:
        data = json.loads((board / "bob.pub.json").read_text())
        data["identity"] = "Jane Doe <jane@contoso.com>"
        entry.write_text(json.dumps(data) + " " * (keys.MAX_KEY_FILE_BYTES + 1))
        expected = "larger than"
    result = psbridge("verify", tmp_path / "output" / "contoso", "--trusted-keys", board)
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert f"{entry}:" in result.stderr and expected in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_symlinked_private_key_is_still_fine(tmp_path: Path) -> None:
    made = fast_key(tmp_path / "real")
    link = tmp_path / "mine.key"
    link.symlink_to(made.private_key)
    (tmp_path / "mine.pub.json").symlink_to(made.public_key)
    assert keys.load_private_key(link, lambda: PASSPHRASE)[1].fingerprint == made.fingerprint


@pytest.mark.parametrize("text", ["[" * 60000, '{"a":' * 12000, "[" * 30000 + "]" * 30000])
def test_deeply_nested_public_key_file_is_a_one_line_error(psbridge, tmp_path: Path, board: Path, text: str) -> None:
    (board / "x.pub.json").write_text(text)
    result = psbridge("verify", tmp_path / "output" / "contoso", "--trusted-keys", board)
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert f"{board / 'x.pub.json'}: not a psbridge public key" in result.stderr
    assert result.stderr.strip().count("\n") == 0


# --------------------------------------------------------------------------- 4. the wrong half of the pair


@pytest.mark.parametrize("renamed", [False, True])
def test_approve_with_the_public_key_as_key_says_so_instead_of_chmod_advice(psbridge, tmp_path: Path,
                                                                            renamed: bool) -> None:
    from support.packages import approvals_of
    from support.winrm_peer.package import make_package

    pkg = make_package(tmp_path / "output")
    made = fast_key(tmp_path / "k")
    given = made.public_key
    if renamed:
        given = tmp_path / "k" / "jane.json"
        given.write_bytes(made.public_key.read_bytes())
    given.chmod(0o644)
    result = psbridge("approve", pkg, "--key", given, env=ENV)
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert f"{given.name} is a public key; --key takes the private key file (.key)" in result.stderr
    assert "chmod" not in result.stderr and result.stderr.strip().count("\n") == 0
    assert not approvals_of(pkg)


# --------------------------------------------------------------------------- people, not look-alikes (issue 20, item 2)

LOOK_ALIKES = ("Jane Doe <jane@contoso.com>", "Jane Doe", "Jane Doe <j\u0430ne@contoso.com>",
               "Jane Doe <\uff4a\uff41\uff4e\uff45@contoso.com>", "Jane Doe <jane@contoso.com.>")


def _key_as(folder: Path, identity: str) -> Path:
    """A key pair whose public file names `identity` (as an old or hand-made key would: keygen refuses these)."""
    made = keys.generate_keypair(folder, "Tmp <tmp@contoso.com>", None)
    data = json.loads(made.public_key.read_text())
    data["identity"] = identity
    made.public_key.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return made.private_key


def test_five_look_alike_identities_are_not_five_people(psbridge, tmp_path: Path) -> None:
    from support.winrm_peer.package import make_package
    from psbridge import approvals
    from psbridge.package import read_package

    pkg = make_package(tmp_path / "output")
    board = tmp_path / "board"
    board.mkdir()
    for n, identity in enumerate(LOOK_ALIKES):
        private = _key_as(tmp_path / f"k{n}", identity)
        (board / f"k{n}.pub.json").write_bytes(keys.public_key_path_for(private).read_bytes())
        approvals.approve_package(read_package(pkg), private, timedelta(days=1), passphrase_reader=lambda: "")
    result = psbridge("verify", pkg, "--trusted-keys", board, "--min-approvals", "2")
    assert result.exit_code == 1, result.stdout
    assert "too few approvals: 1 valid" in result.stderr
    assert " ".join(result.stderr.split()).count("no address:") == 4 and "psbridge keygen --out" in result.stderr
    assert psbridge("verify", pkg, "--trusted-keys", board).exit_code == 0  # the one real address counts once


@pytest.mark.parametrize("alias", LOOK_ALIKES[1:] + ("Jane Doe <JANE@Contoso.com>",))
def test_forbid_key_is_not_bypassed_by_a_look_alike_second_key(psbridge, tmp_path: Path, keys: dict[str, Path],
                                                               alias: str) -> None:
    from support.winrm_peer.package import make_package
    from psbridge import approvals
    from psbridge.package import read_package

    pkg = make_package(tmp_path / "output")
    board = tmp_path / "board"
    board.mkdir()
    from psbridge.keys import public_key_path_for

    private = _key_as(tmp_path / "alias", alias)
    (board / "jane-laptop.pub.json").write_bytes(public_key_path_for(private).read_bytes())
    approvals.approve_package(read_package(pkg), private, timedelta(days=1), passphrase_reader=lambda: "")
    result = psbridge("verify", pkg, "--trusted-keys", board, "--forbid-key", keys["jane"])
    assert result.exit_code == 1 and "too few approvals: no valid" in result.stderr


@pytest.mark.parametrize("name", ["Jane Doe", "Jane Doe <j\u0430ne@contoso.com>", "Jane <jane@contoso.com.>",
                                  "Jane <\uff4a\uff41\uff4e\uff45@contoso.com>", "Jane <a@b> <c@d>"])
def test_keygen_refuses_a_name_without_a_usable_address(psbridge, tmp_path: Path, name: str) -> None:
    result = psbridge("keygen", "--out", "k", "--name", name, "--no-passphrase")
    assert result.exit_code == 2 and "--name" in result.stderr and "address" in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert not (tmp_path / "k").exists()


def test_keygen_writes_the_normalised_address(psbridge, tmp_path: Path) -> None:
    result = psbridge("keygen", "--out", "k", "--name", "Jane Doe <JANE@B\u00fccher.DE>", "--no-passphrase")
    assert result.exit_code == 0, result.stderr
    data = json.loads((tmp_path / "k" / "jane-doe.pub.json").read_text())
    assert data["identity"] == "Jane Doe <jane@xn--bcher-kva.de>"
