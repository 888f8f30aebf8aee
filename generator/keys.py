"""Approver keys: Ed25519 key pairs, the public-key files a board trusts, and identities.

An approver holds a private key ``<slug>.key`` (mode 0600) and gives the board a public key
file ``<slug>.pub.json`` = ``{"format": "psbridge-public-key-v1", "identity",
"algorithm": "ed25519", "public_key": base64(raw 32 bytes), "fingerprint": sha256 hex
of the raw key}``. A trusted-keys folder is a folder of these files.

Private keys are written in the OpenSSH private key format ("openssh-key-v1", see
OpenSSH's PROTOCOL.key), encrypted by default with aes256-ctr under a key derived from
the passphrase by bcrypt_pbkdf with `KDF_ROUNDS` rounds. Why these choices:

* The previous format, PKCS#8 with `BestAvailableEncryption`, derives the key with
  PBKDF2-HMAC-SHA256 at 2,048 iterations; OWASP's Password Storage Cheat Sheet asks for
  600,000 iterations of PBKDF2-HMAC-SHA256, or a memory-hard / bcrypt-style function
  (Argon2id, scrypt, bcrypt with work factor >= 10). `cryptography` cannot write a PKCS#8
  key with scrypt or Argon2, but it writes OpenSSH keys with bcrypt_pbkdf (it needs the
  pyca `bcrypt` package for that, a runtime dependency of psbridge).
* ssh-keygen's default is 16 rounds (ssh-keygen(1), option ``-a rounds``: "Higher
  numbers result in slower passphrase verification and increased resistance to
  brute-force password cracking"), and `cryptography` also writes 16 by default. Each
  bcrypt_pbkdf round runs one bcrypt hash (128 Blowfish key expansions) per 32-byte output
  block, and aes256-ctr needs 48 bytes (2 blocks). So 16 rounds cost about as much as a
  bcrypt work factor of 11, and 64 rounds about as much as work factor 13: above OWASP's
  minimum of 10, at the cost of waiting once per approval. Measured on the 2-core build
  machine (Python 3.11, cryptography 50, bcrypt 5; CPU time): 16 rounds 0.12 s, 64 rounds
  0.49 s, 128 rounds 0.97 s per keygen or key load; `psbridge approve` with a 64-round key
  takes about 0.6 s end to end, so 64 keeps it under a second.
  (The work-factor equivalence is our arithmetic from the bcrypt_pbkdf construction, not
  a figure from OWASP.)
* A key file that asks for more than `MAX_KDF_ROUNDS` rounds is refused instead of
  hanging the command for minutes.

Keys written by earlier versions (PKCS#8 PEM, plain or PBKDF2-encrypted) still load, with
a one-line note recommending a new key. ``keygen --no-passphrase`` writes an unencrypted
OpenSSH key, on explicit request only.

This module does not import click (it is library code); passphrases come from a
`passphrase_reader` callable. `cryptography` is imported inside the functions that need
it, so that importing this module (and starting the CLI) stays cheap.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import sys
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UserError
from .files import sha256_hex, write_file
from .text import no_command

if TYPE_CHECKING:  # pragma: no cover - typing only; keeps cryptography out of import time
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

#: Environment variable holding the passphrase of an approver's private key.
PASSPHRASE_ENV = "PSBRIDGE_KEY_PASSPHRASE"
PUBLIC_KEY_FORMAT = "psbridge-public-key-v1"
PUBLIC_KEY_SUFFIX = ".pub.json"
PRIVATE_KEY_SUFFIX = ".key"
MAX_IDENTITY = 200
#: bcrypt_pbkdf rounds for new private keys (ssh-keygen's default is 16); see the module docstring.
KDF_ROUNDS = 64
#: A key file asking for more rounds than this is refused rather than loaded for minutes.
MAX_KDF_ROUNDS = 1024
#: Key files are a few hundred bytes; anything larger is not one (and is not read whole).
MAX_KEY_FILE_BYTES = 64 * 1024
_OPENSSH_BEGIN = b"-----BEGIN OPENSSH PRIVATE KEY-----"
_OPENSSH_END = b"-----END OPENSSH PRIVATE KEY-----"
_OPENSSH_MAGIC = b"openssh-key-v1\0"
_PKCS8_PLAIN = b"-----BEGIN PRIVATE KEY-----"
_PKCS8_ENCRYPTED = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")

def fingerprint(raw_public_key: bytes) -> str:
    """sha256 hex of the raw 32-byte Ed25519 public key: the name of a key everywhere in psbridge."""
    return sha256_hex(raw_public_key)


def short(fp: str) -> str:
    """First 16 hex digits of a fingerprint, enough for people to tell keys apart in messages."""
    return fp[:16]


def _identity_problem(value: str) -> str | None:
    """What is wrong with a (stripped) identity, or None: one printable line, at most MAX_IDENTITY."""
    if not value:
        return "empty"
    if len(value) > MAX_IDENTITY:
        return f"longer than {MAX_IDENTITY} characters"
    # isprintable() already refuses control characters, line/paragraph separators and most
    # format characters; Cf is named explicitly because bidi overrides and zero-width
    # characters are what would make two identities look alike to an auditor.
    if any(not ch.isprintable() or unicodedata.category(ch) == "Cf" for ch in value):
        return "must be one line of printable characters (no control, bidi or zero-width characters)"
    return None


#: What keygen says when a name carries no usable e-mail address (it is the person psbridge counts).
KEYGEN_HINT = 'psbridge keygen --out DIR --name "Jane Doe <jane@contoso.com>"'
_ADDRESS_IN_BRACKETS = re.compile(r"^([^<>]*)<([^<>]*)>$")


class NoAddress(ValueError):
    """An identity without an e-mail address psbridge accepts (see `identity_address`)."""


def _split_identity(identity: str) -> tuple[str, str]:
    """(display name, address text) of "Display <address>" or a bare "address"."""
    text = identity.strip()
    match = _ADDRESS_IN_BRACKETS.match(text)
    if match:
        return match.group(1).strip(), match.group(2).strip()
    if "<" in text or ">" in text:
        raise NoAddress("write it as \"Name <address>\" with one pair of angle brackets")
    if "@" not in text:
        raise NoAddress("no e-mail address")
    return "", text


def identity_address(identity: str) -> str:
    """The person an identity names: its e-mail address, normalised so look-alikes cannot hide in it.

    The address is checked by `email-validator` (a well-kept library, not our own parser):
    the local part must be ASCII (a Cyrillic "а" or a full-width "ａ" is refused, not
    silently a second person), the domain is taken in its IDNA ASCII form (a look-alike
    domain shows as ``xn--…``; full-width letters in the domain map to ASCII by IDNA's own
    rules), a trailing dot is refused, and the result is case-folded. Single-label domains
    (``jane@corp``) are accepted: an identity is a name for a person, not a mailbox psbridge
    writes to, and deliverability is never checked (no DNS). Raises NoAddress saying why.
    """
    from email_validator import EmailNotValidError, validate_email

    _, address = _split_identity(identity)
    if not address:
        raise NoAddress("no e-mail address")
    try:
        checked = validate_email(address, allow_smtputf8=False, check_deliverability=False,
                                 globally_deliverable=False)
    except EmailNotValidError as exc:
        raise NoAddress(f"e-mail address not accepted ({' '.join(str(exc).split())})") from None
    return f"{checked.local_part.lower()}@{checked.ascii_domain.lower()}"


def check_identity(name: str) -> str:
    """An approver identity: one printable line holding an e-mail address (the person it names).

    Returns the identity psbridge writes: the display name as given and the address in its
    normalised form (`identity_address`), so what auditors read is what is counted.
    """
    value = (name or "").strip()
    if not value:
        raise UserError(f"--name: empty; give the approver, e.g. {KEYGEN_HINT.split('--name ')[1]}")
    problem = _identity_problem(value)
    if problem:
        raise UserError(f"--name: {problem}")
    try:
        address = identity_address(value)
    except NoAddress as exc:
        raise UserError(f"--name: {exc}; an approver is their e-mail address, "
                        f"e.g. {KEYGEN_HINT.split('--name ')[1]}") from None
    display, _ = _split_identity(value)
    return f"{display} <{address}>" if display else address


def identity_key(identity: str) -> str | None:
    """Who an identity names, for counting people rather than keys: its normalised e-mail
    address (`identity_address`), or None when it has none psbridge accepts (such a key
    never counts: one person could otherwise appear as several look-alike names).
    """
    try:
        return identity_address(unicodedata.normalize("NFC", identity))
    except NoAddress:
        return None


def no_address_problem(identity: str) -> str | None:
    """Why an identity names no person psbridge counts, with the command that makes a new key; None when it does."""
    try:
        identity_address(identity)
    except NoAddress as exc:
        return f"no usable e-mail address in the identity ({exc}); it does not count: make a new key with {KEYGEN_HINT}"
    return None


def identity_slug(identity: str) -> str:
    """File-name stem from an identity ("Jane Doe <jane@x>" -> "jane-doe"), so keys don't collide."""
    display = identity.split("<", 1)[0].strip() or identity
    slug = re.sub(r"[^a-z0-9]+", "-", display.lower()).strip("-")
    return slug[:60] or "approver"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: object, what: str) -> bytes:
    """Strict base64 decode; a malformed value is a malformed file, not a crash."""
    if not isinstance(text, str):
        raise ValueError(f"{what} is not a string")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError(f"{what} is not base64") from exc


def read_key_file(path: Path, label: str, *, follow_symlinks: bool = True) -> bytes:
    """The bytes of a key file that must be a small regular file; `label` starts every error.

    Opened non-blocking (a FIFO can't hang the command) and checked with fstat on the
    open descriptor (no swap between check and read); at most MAX_KEY_FILE_BYTES are read.
    Without `follow_symlinks` a symbolic link is refused (O_NOFOLLOW closes the race).
    """
    from .files import read_regular

    return read_regular(path, label, limit=MAX_KEY_FILE_BYTES, too_large="not a key file",
                        follow_symlinks=follow_symlinks)


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class PublicKey:
    """An approver's public key and the identity it was issued to."""

    identity: str
    raw: bytes
    fingerprint: str
    path: Path | None = None

    @property
    def person(self) -> str | None:
        """`identity_key` of the identity: two keys of one person have the same `person`; None without an address."""
        return identity_key(self.identity)

    def to_json(self) -> dict[str, str]:
        """The public key file's content."""
        return {
            "format": PUBLIC_KEY_FORMAT,
            "identity": self.identity,
            "algorithm": "ed25519",
            "public_key": b64(self.raw),
            "fingerprint": self.fingerprint,
        }


@dataclass(frozen=True)
class KeyPairFiles:
    """Where `generate_keypair` wrote the two files."""

    private_key: Path
    public_key: Path
    fingerprint: str
    encrypted: bool


def public_key_path_for(private_key: Path) -> Path:
    """The public key file keygen writes next to a private key (`jane-doe.key` -> `jane-doe.pub.json`)."""
    stem = private_key.name[: -len(PRIVATE_KEY_SUFFIX)] if private_key.name.endswith(PRIVATE_KEY_SUFFIX) else private_key.name
    return private_key.with_name(stem + PUBLIC_KEY_SUFFIX)


def generate_keypair(
    out_dir: Path, name: str, passphrase: str | None, *, force: bool = False, kdf_rounds: int = KDF_ROUNDS
) -> KeyPairFiles:
    """Create an Ed25519 approver key pair in `out_dir`; the private key never touches disk unprotected.

    `passphrase` None writes an unencrypted key: callers ask for that explicitly
    (``keygen --no-passphrase``). `kdf_rounds` is the bcrypt_pbkdf cost (tests lower it
    for speed; the command line always uses `KDF_ROUNDS`). Both target names are checked
    before anything is written, so a refused keygen leaves no half pair behind.
    """
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    identity = check_identity(name)
    if passphrase is not None and not passphrase:
        raise UserError("key passphrase: empty")
    if not 1 <= kdf_rounds <= MAX_KDF_ROUNDS:
        raise ValueError(f"kdf_rounds must be 1..{MAX_KDF_ROUNDS}")
    stem = identity_slug(identity)
    private_path = out_dir / f"{stem}{PRIVATE_KEY_SUFFIX}"
    public_path = out_dir / f"{stem}{PUBLIC_KEY_SUFFIX}"
    if not force:
        existing = [str(p) for p in (private_path, public_path) if p.exists() or p.is_symlink()]
        if existing:
            raise UserError(*(f"{p}: exists; use --force to replace it" for p in existing))
    key = Ed25519PrivateKey.generate()
    encryption: serialization.KeySerializationEncryption = (
        serialization.PrivateFormat.OpenSSH.encryption_builder().kdf_rounds(kdf_rounds).build(_secret_bytes(passphrase))
        if passphrase else serialization.NoEncryption()
    )
    try:
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption)
    except UnsupportedAlgorithm:
        raise UserError("keygen: encrypting the key needs the bcrypt package (pip install bcrypt)") from None
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    public = PublicKey(identity, raw, fingerprint(raw))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out_dir}: cannot create folder: {exc.strerror or exc}") from None
    write_file(private_path, pem, 0o600, overwrite=force)
    body = json.dumps(public.to_json(), indent=2, ensure_ascii=False) + "\n"
    try:
        write_file(public_path, body.encode("utf-8"), 0o644, overwrite=force)
    except BaseException:
        if not force:
            private_path.unlink(missing_ok=True)  # no private key without the public file that names it
        raise
    return KeyPairFiles(private_path, public_path, public.fingerprint, encrypted=bool(passphrase))


def parse_public_key(data: Mapping[str, Any], path: Path | None = None) -> PublicKey:
    """Validate a public key file's content; the stored fingerprint must match the key (no typos trusted)."""
    if data.get("format") != PUBLIC_KEY_FORMAT or data.get("algorithm") != "ed25519":
        raise ValueError(f"not a {PUBLIC_KEY_FORMAT} ed25519 key")
    identity = data.get("identity")
    if not isinstance(identity, str) or not identity.strip():
        raise ValueError("identity missing")
    problem = _identity_problem(identity.strip())
    if problem:
        raise ValueError(f"identity: {problem}")
    raw = unb64(data.get("public_key"), "public_key")
    if len(raw) != 32:
        raise ValueError("public_key is not 32 bytes")
    fp = fingerprint(raw)
    if data.get("fingerprint") not in (None, fp):
        raise ValueError("fingerprint does not match public_key")
    return PublicKey(identity, raw, fp, path)


def load_public_key(path: Path, *, follow_symlinks: bool = True) -> PublicKey:
    """Read a `.pub.json` file; any problem is an input error naming the file."""
    data = read_key_file(path, str(path), follow_symlinks=follow_symlinks)
    try:
        try:
            content = json.loads(data.decode("utf-8"))
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None
        if not isinstance(content, dict):
            raise ValueError("not a JSON object")
        return parse_public_key(content, path)
    except (UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path}: not a psbridge public key ({_one_line(exc)})") from None


def _one_line(exc: Exception) -> str:
    """An exception's message on one line (a JSON error never spans lines, but be sure)."""
    return " ".join(str(exc).split())


@dataclass(frozen=True)
class TrustedFolder:
    """The board's trusted-keys folder as read: the keys by fingerprint, and the hidden files ignored."""

    keys: dict[str, PublicKey]
    hidden: list[str]

    def named(self) -> list[str]:
        """One line per trusted key, so an auditor sees every key that counted and whose it is."""
        return [f"{key.path.name if key.path else '?'} ({key.identity}, key {short(key.fingerprint)})"
                for key in sorted(self.keys.values(), key=lambda k: k.path.name if k.path else "")]

    def notice(self, directory: Path) -> str | None:
        """The one-line notice naming ignored hidden files, or None when there are none.

        No backticks: the screen prints text between them whole on a line of its own, as a command to
        copy (a quoted `ls` stood alone on a line); a hidden file's name, which whoever can write the
        folder chose, has its backticks escaped for the same reason."""
        if not self.hidden:
            return None
        return (f"--trusted-keys {directory}: ignored hidden file(s) {', '.join(no_command(n) for n in self.hidden)}: "
                "a key the board trusts must be a visible file (a name not starting with a dot)")


def read_trusted_folder(directory: Path) -> TrustedFolder:
    """Every visible `*.pub.json` in `directory`, by fingerprint: the board's list of who may approve.

    A hidden file (name starting with a dot) is never trusted, only named in `hidden`: a key
    the board trusts must be one `ls` shows. An empty or unreadable folder is an input error
    rather than "nobody approved", so a wrong path cannot be mistaken for a policy. One key per
    person (`PublicKey.person`): a folder holding two keys of one person is refused, naming
    both files, so that one person can never count twice. The same key in two files under the
    same identity is one key. Every entry must be a small regular file: a FIFO, device or
    folder named ``*.pub.json`` is refused, and so is a symbolic link (what the board trusts
    must be in the folder the board controls, not wherever a link points).
    """
    if not directory.is_dir():
        raise UserError(f"--trusted-keys {directory}: not a folder")
    keys: dict[str, PublicKey] = {}
    people: dict[str, PublicKey] = {}
    hidden: list[str] = []
    for path in sorted(directory.glob(f"*{PUBLIC_KEY_SUFFIX}")):
        if path.name.startswith("."):
            hidden.append(path.name)
            continue
        key = load_public_key(path, follow_symlinks=False)
        other = keys.get(key.fingerprint)
        if other is not None:
            if other.identity != key.identity:
                raise UserError(f"{path}: same key as {other.path} but a different identity")
            continue
        same_person = people.get(key.person) if key.person is not None else None
        if same_person is not None:
            raise UserError(f"{same_person.path} and {path}: two keys of the same person ({key.person}); "
                            "keep one key per person in the trusted-keys folder")
        keys[key.fingerprint] = key
        if key.person is not None:
            people[key.person] = key
    if not keys:
        raise UserError(f"--trusted-keys {directory}: no *{PUBLIC_KEY_SUFFIX} public keys in it"
                        + (f" (hidden files ignored: {', '.join(hidden)})" if hidden else ""))
    return TrustedFolder(keys, hidden)


#: How a private key file begins (OpenSSH, PKCS#8, encrypted PKCS#8): what keygen writes and earlier versions wrote.
_PRIVATE_KEY_MARKERS = (b"-----BEGIN OPENSSH PRIVATE KEY-----", b"-----BEGIN PRIVATE KEY-----",
                        b"-----BEGIN ENCRYPTED PRIVATE KEY-----")


def private_keys_in(directory: Path) -> list[str]:
    """The names of private key files in the trusted-keys folder (`*.key`, or a file that begins like one).

    The board's folder is for public keys: a private key in it is readable by whoever can read
    the folder, and anyone holding it can approve as its owner. Only regular files directly in
    the folder are looked at (no link followed, only the first bytes read); an unreadable folder
    says nothing here (reading the keys reports it).
    """
    found: list[str] = []
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return found
    for path in entries:
        if path.is_symlink() or not path.is_file():
            continue
        if path.name.endswith(PRIVATE_KEY_SUFFIX) or _begins_like_a_private_key(path):
            found.append(path.name)
    return found


def _begins_like_a_private_key(path: Path) -> bool:
    """Whether the file's first bytes are a private key's PEM header (a .key renamed is still a key)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        head = os.read(fd, 64).lstrip()
    except OSError:
        return False
    finally:
        os.close(fd)
    return head.startswith(_PRIVATE_KEY_MARKERS)


def private_key_notice(directory: Path) -> str | None:
    """The one-line warning when the trusted-keys folder holds a private key file, else None."""
    found = private_keys_in(directory)
    if not found:
        return None
    return (f"--trusted-keys {directory}: holds private key file(s) {', '.join(found)}: keep private keys out of "
            "the board's folder (keygen --key-out DIR --pub-out DIR)")


def load_trusted_keys(directory: Path) -> dict[str, PublicKey]:
    """The keys of `read_trusted_folder` (hidden files ignored), for callers that only judge trust."""
    return read_trusted_folder(directory).keys


def default_passphrase_reader() -> str:
    """Passphrase from PSBRIDGE_KEY_PASSPHRASE or a hidden prompt on a terminal (never a flag)."""
    from .secrets import read_secret

    return read_secret(PASSPHRASE_ENV, "key passphrase", stdin_flag=None)


def load_private_key(
    path: Path, passphrase_reader: Callable[[], str] = default_passphrase_reader
) -> tuple[Ed25519PrivateKey, PublicKey]:
    """Load an approver's private key and the identity from the public key file next to it.

    Reads the OpenSSH format keygen writes and the PKCS#8 PEM of earlier versions. The
    passphrase is only asked for when the key is encrypted. The public key file must hold
    the same key, so an approval can't claim someone else's identity by accident.
    """
    label = f"--key {path}"
    data = read_key_file(path, label)
    if path.name.endswith(PUBLIC_KEY_SUFFIX) or _is_public_key_file(data):
        raise UserError(f"{label}: {path.name} is a public key; --key takes the private key file ({PRIVATE_KEY_SUFFIX})")
    _warn_if_exposed(path)
    key = _decode_private_key(data, path, label, passphrase_reader)
    raw = _raw_public(key)
    public_file = public_key_path_for(path)
    if not public_file.is_file():
        raise UserError(f"{label}: no {public_file.name} next to it (keygen writes it; it names the approver)")
    public = load_public_key(public_file)
    if public.raw != raw:
        raise UserError(f"{public_file}: holds a different key than {path}")
    return key, public


def _is_public_key_file(data: bytes) -> bool:
    """A psbridge .pub.json, whatever it is called (given where the private key belongs)."""
    return data.lstrip().startswith(b"{") and PUBLIC_KEY_FORMAT.encode() in data


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class _OpenSSHHeader:
    """The unencrypted part of an OpenSSH private key file (PROTOCOL.key)."""

    cipher: str
    kdf: str
    rounds: int | None
    public_raw: bytes

    @property
    def encrypted(self) -> bool:
        return self.cipher != "none" or self.kdf != "none"


def _ssh_string(buf: bytes, at: int) -> tuple[bytes, int]:
    if at + 4 > len(buf):
        raise ValueError("truncated")
    size = int.from_bytes(buf[at:at + 4], "big")
    end = at + 4 + size
    if end > len(buf):
        raise ValueError("truncated")
    return buf[at + 4:end], end


def _openssh_header(data: bytes) -> _OpenSSHHeader | None:
    """Cipher, KDF, rounds and public key of an OpenSSH private key file; None if it is not one.

    The public key is stored unencrypted, so a fingerprint needs no passphrase, and the
    rounds can be checked before any time is spent on them. Raises ValueError when the
    file claims to be an OpenSSH key but is malformed or holds something else than one
    Ed25519 key.
    """
    text = data.strip()
    if not text.startswith(_OPENSSH_BEGIN):
        return None
    if not text.endswith(_OPENSSH_END):
        raise ValueError("no END line")
    body = b"".join(text[len(_OPENSSH_BEGIN):-len(_OPENSSH_END)].split())
    try:
        blob = base64.b64decode(body, validate=True)
    except binascii.Error:
        raise ValueError("not base64") from None
    if not blob.startswith(_OPENSSH_MAGIC):
        raise ValueError("not openssh-key-v1")
    at = len(_OPENSSH_MAGIC)
    cipher, at = _ssh_string(blob, at)
    kdf, at = _ssh_string(blob, at)
    options, at = _ssh_string(blob, at)
    if blob[at:at + 4] != b"\0\0\0\1":
        raise ValueError("not exactly one key")
    public_blob, _ = _ssh_string(blob, at + 4)
    key_type, after = _ssh_string(public_blob, 0)
    public_raw, _ = _ssh_string(public_blob, after)
    if key_type != b"ssh-ed25519" or len(public_raw) != 32:
        raise ValueError("not an Ed25519 key")
    rounds = None
    if kdf == b"bcrypt":
        _salt, after = _ssh_string(options, 0)
        if len(options) != after + 4:
            raise ValueError("bad bcrypt options")
        rounds = int.from_bytes(options[after:], "big")
    return _OpenSSHHeader(cipher.decode("ascii", "replace"), kdf.decode("ascii", "replace"), rounds, public_raw)


def _secret_bytes(passphrase: str) -> bytes:
    """UTF-8 bytes of a passphrase; surrogate escapes (undecodable bytes in an environment
    variable) become their original bytes instead of an exception that could carry them."""
    return passphrase.encode("utf-8", "surrogateescape")


def _note(message: str) -> None:
    print(f"psbridge: note: {message}", file=sys.stderr)


def _decode_private_key(
    data: bytes, path: Path, label: str, passphrase_reader: Callable[[], str]
) -> Ed25519PrivateKey:
    """The Ed25519 private key in `data` (OpenSSH, or legacy PKCS#8 PEM); `label` starts every error."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key: object
    try:
        header = _openssh_header(data)
    except ValueError as exc:
        raise UserError(f"{label}: damaged OpenSSH private key ({exc})") from None
    if header is not None:
        if header.rounds is not None and header.rounds > MAX_KDF_ROUNDS:
            raise UserError(f"{label}: asks for {header.rounds} bcrypt rounds (more than {MAX_KDF_ROUNDS}); refusing")
        password = _secret_bytes(passphrase_reader()) if header.encrypted else None
        try:
            key = serialization.load_ssh_private_key(data, password=password)
        except UnsupportedAlgorithm as exc:
            if "bcrypt" in str(exc).lower():
                raise UserError(f"{label}: encrypted keys need the bcrypt package (pip install bcrypt)") from None
            raise UserError(f"{label}: unsupported key encryption ({header.cipher}, {header.kdf})") from None
        except (ValueError, TypeError):
            raise UserError(f"{label}: {'wrong passphrase or damaged key' if password else 'damaged key'}") from None
        if header.encrypted and header.rounds is not None and header.rounds < KDF_ROUNDS:
            _note(f"{path} uses {header.rounds} bcrypt rounds (keygen uses {KDF_ROUNDS}); consider re-keying")
    elif data.lstrip().startswith((_PKCS8_PLAIN, _PKCS8_ENCRYPTED)):
        try:
            key = serialization.load_pem_private_key(data, password=None)
            _note(f"{path} is an unencrypted key in the old PKCS#8 format; re-key with psbridge keygen")
        except TypeError:  # encrypted: needs the passphrase
            secret = passphrase_reader()
            try:
                key = serialization.load_pem_private_key(data, password=_secret_bytes(secret))
            except (ValueError, TypeError):
                raise UserError(f"{label}: wrong passphrase or damaged key") from None
            _note(f"{path} is protected by the old PKCS#8 format (PBKDF2, 2048 iterations); "
                  "re-key with psbridge keygen (bcrypt-pbkdf)")
        except (ValueError, UnsupportedAlgorithm):
            raise UserError(f"{label}: damaged PEM private key") from None
    else:
        raise UserError(f"{label}: not a private key file (psbridge keygen writes one)")
    if not isinstance(key, Ed25519PrivateKey):
        raise UserError(f"{label}: not an Ed25519 key (use psbridge keygen)")
    return key


def _warn_if_exposed(path: Path) -> None:
    """Warn (like ssh) when a private key is readable by others; the approval is only as good as the key."""
    if os.name != "posix":
        return
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & 0o077:
        print(f"psbridge: warning: {path} is accessible by other users (mode {mode & 0o777:o}); chmod 600 it", file=sys.stderr)


def key_fingerprint(spec: str) -> str:
    """Fingerprint from a `.pub.json` file, a private key (via its public file or itself), or 64 hex digits.

    Used by `--forbid-key` and `run --forbid-self-approval --key`: the operator names
    their key however they hold it. An OpenSSH private key's public half is not encrypted,
    so no passphrase is asked for; a legacy encrypted PKCS#8 key still needs it.
    """
    text = spec.strip()
    candidate = text.lower().removeprefix("sha256:")
    path = Path(text)
    if not path.exists() and _HEX64.match(candidate):
        return candidate
    if not path.is_file():
        raise UserError(f"{spec}: neither a key file nor a 64-digit hex fingerprint")
    if path.name.endswith(PUBLIC_KEY_SUFFIX):
        return load_public_key(path).fingerprint
    data = read_key_file(path, str(path))
    if _is_public_key_file(data):
        return load_public_key(path).fingerprint
    try:
        header = _openssh_header(data)
    except ValueError as exc:
        raise UserError(f"{path}: damaged OpenSSH private key ({exc})") from None
    if header is not None:
        raw = header.public_raw
    else:
        raw = _raw_public(_decode_private_key(data, path, str(path), default_passphrase_reader))
    sibling = public_key_path_for(path)
    if sibling != path and sibling.is_file():
        public = load_public_key(sibling)
        if public.raw != raw:
            raise UserError(f"{sibling}: holds a different key than {path}")
    return fingerprint(raw)
