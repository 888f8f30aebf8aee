"""Approver keys: Ed25519 key pairs, the public-key files a board trusts, and identities.

An approver holds a private key (PKCS#8 PEM, mode 0600) and gives the board a public key
file ``<slug>.pub.json`` = ``{"format": "psbridge-public-key-v1", "identity",
"algorithm": "ed25519", "public_key": base64(raw 32 bytes), "fingerprint": sha256 hex
of the raw key}``. A trusted-keys folder is a folder of these files.

`cryptography` is imported inside the functions that need it, so that importing this
module (and starting the CLI) stays cheap.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UserError
from .files import sha256_hex, write_file

if TYPE_CHECKING:  # pragma: no cover - typing only; keeps cryptography out of import time
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

#: Environment variable holding the passphrase of an approver's private key.
PASSPHRASE_ENV = "PSBRIDGE_KEY_PASSPHRASE"
PUBLIC_KEY_FORMAT = "psbridge-public-key-v1"
PUBLIC_KEY_SUFFIX = ".pub.json"
PRIVATE_KEY_SUFFIX = ".key"
MAX_IDENTITY = 200
_HEX64 = re.compile(r"^[0-9a-f]{64}$")

def fingerprint(raw_public_key: bytes) -> str:
    """sha256 hex of the raw 32-byte Ed25519 public key: the name of a key everywhere in psbridge."""
    return sha256_hex(raw_public_key)


def short(fp: str) -> str:
    """First 16 hex digits of a fingerprint, enough for people to tell keys apart in messages."""
    return fp[:16]


def check_identity(name: str) -> str:
    """An approver identity is one printable line; it is shown to auditors and signed."""
    value = (name or "").strip()
    if not value:
        raise UserError("--name: empty; give the approver, e.g. \"Jane Doe <jane@contoso.com>\"")
    if len(value) > MAX_IDENTITY:
        raise UserError(f"--name: longer than {MAX_IDENTITY} characters")
    if any(not ch.isprintable() for ch in value):
        raise UserError("--name: must be one line of printable characters")
    return value


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


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class PublicKey:
    """An approver's public key and the identity it was issued to."""

    identity: str
    raw: bytes
    fingerprint: str
    path: Path | None = None

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


def generate_keypair(out_dir: Path, name: str, passphrase: str | None, *, force: bool = False) -> KeyPairFiles:
    """Create an Ed25519 approver key pair in `out_dir`; the private key never touches disk unprotected.

    Both target names are checked before anything is written, so a refused keygen leaves
    no half pair behind.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    identity = check_identity(name)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = identity_slug(identity)
    private_path = out_dir / f"{stem}{PRIVATE_KEY_SUFFIX}"
    public_path = out_dir / f"{stem}{PUBLIC_KEY_SUFFIX}"
    if not force:
        existing = [str(p) for p in (private_path, public_path) if p.exists() or p.is_symlink()]
        if existing:
            raise UserError(*(f"{p}: exists; use --force to replace it" for p in existing))
    key = Ed25519PrivateKey.generate()
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode("utf-8")) if passphrase else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    public = PublicKey(identity, raw, fingerprint(raw))
    write_file(private_path, pem, 0o600, overwrite=force)
    body = json.dumps(public.to_json(), indent=2, ensure_ascii=False) + "\n"
    write_file(public_path, body.encode("utf-8"), 0o644, overwrite=force)
    return KeyPairFiles(private_path, public_path, public.fingerprint, encrypted=bool(passphrase))


def parse_public_key(data: Mapping[str, Any], path: Path | None = None) -> PublicKey:
    """Validate a public key file's content; the stored fingerprint must match the key (no typos trusted)."""
    if data.get("format") != PUBLIC_KEY_FORMAT or data.get("algorithm") != "ed25519":
        raise ValueError(f"not a {PUBLIC_KEY_FORMAT} ed25519 key")
    identity = data.get("identity")
    if not isinstance(identity, str) or not identity.strip():
        raise ValueError("identity missing")
    raw = unb64(data.get("public_key"), "public_key")
    if len(raw) != 32:
        raise ValueError("public_key is not 32 bytes")
    fp = fingerprint(raw)
    if data.get("fingerprint") not in (None, fp):
        raise ValueError("fingerprint does not match public_key")
    return PublicKey(identity, raw, fp, path)


def load_public_key(path: Path) -> PublicKey:
    """Read a `.pub.json` file; any problem is an input error naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return parse_public_key(data, path)
    except FileNotFoundError:
        raise UserError(f"{path}: public key file not found") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a psbridge public key ({exc})") from None


def load_trusted_keys(directory: Path) -> dict[str, PublicKey]:
    """Every `*.pub.json` in `directory`, by fingerprint: the board's list of who may approve.

    An empty or unreadable folder is an input error rather than "nobody approved", so a
    wrong path cannot be mistaken for a policy.
    """
    if not directory.is_dir():
        raise UserError(f"--trusted-keys {directory}: not a folder")
    keys: dict[str, PublicKey] = {}
    for path in sorted(directory.glob(f"*{PUBLIC_KEY_SUFFIX}")):
        key = load_public_key(path)
        other = keys.get(key.fingerprint)
        if other is not None and other.identity != key.identity:
            raise UserError(f"{path}: same key as {other.path} but a different identity")
        keys[key.fingerprint] = key
    if not keys:
        raise UserError(f"--trusted-keys {directory}: no *{PUBLIC_KEY_SUFFIX} public keys in it")
    return keys


def default_passphrase_reader() -> str:
    """Passphrase from PSBRIDGE_KEY_PASSPHRASE or a hidden prompt on a terminal (never a flag)."""
    from .secrets import read_secret

    return read_secret(PASSPHRASE_ENV, "key passphrase", stdin_flag=None)


def load_private_key(
    path: Path, passphrase_reader: Callable[[], str] = default_passphrase_reader
) -> tuple[Ed25519PrivateKey, PublicKey]:
    """Load an approver's private key and the identity from the public key file next to it.

    The passphrase is only asked for when the key is encrypted. The public key file must
    hold the same key, so an approval can't claim someone else's identity by accident.
    """
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise UserError(f"--key {path}: cannot read ({exc.strerror})") from None
    _warn_if_exposed(path)
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:  # encrypted: needs the passphrase
        secret = passphrase_reader()
        try:
            key = serialization.load_pem_private_key(pem, password=secret.encode("utf-8"))
        except (ValueError, TypeError):
            raise UserError(f"--key {path}: wrong passphrase or damaged key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise UserError(f"--key {path}: not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UserError(f"--key {path}: not an Ed25519 key (use psbridge keygen)")
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    public_file = public_key_path_for(path)
    if not public_file.is_file():
        raise UserError(f"--key {path}: no {public_file.name} next to it (keygen writes it; it names the approver)")
    public = load_public_key(public_file)
    if public.raw != raw:
        raise UserError(f"{public_file}: holds a different key than {path}")
    return key, public


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
    their key however they hold it.
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
    sibling = public_key_path_for(path)
    if sibling.is_file() and sibling != path:
        _, public = load_private_key(path)
        return public.fingerprint
    return _fingerprint_of_bare_private_key(path)


def _fingerprint_of_bare_private_key(path: Path) -> str:
    """Fingerprint of a private key file with no public file next to it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pem = path.read_bytes()
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        try:
            key = serialization.load_pem_private_key(pem, password=default_passphrase_reader().encode("utf-8"))
        except (ValueError, TypeError):
            raise UserError(f"{path}: wrong passphrase or damaged key") from None
    except ValueError:
        raise UserError(f"{path}: not a psbridge key file") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UserError(f"{path}: not an Ed25519 key")
    return fingerprint(key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def identity_key(identity: str) -> str:
    """The person an identity names, for counting approvals: people, not keys.

    The case-folded e-mail address inside `<…>` when there is one (`Jane Doe
    <JANE@contoso.com>` -> `jane@contoso.com`), else the NFC-normalised, case-folded
    identity with runs of whitespace collapsed.
    """
    import unicodedata

    text = unicodedata.normalize("NFC", identity)
    match = re.search(r"<([^<>]+)>", text)
    if match and match.group(1).strip():
        return match.group(1).strip().casefold()
    return " ".join(text.split()).casefold()
