"""Making a certificate (`psbridge cert new`): a self-signed S2S certificate, or the renewal of one.

What Windows' New-SelfSignedCertificate would make, as PFX and DER bytes, with the PFX
encryption the target Windows version imports. Reading and judging certificates is
generator/certificates.py; this module only makes them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .certificates import (
    PASSWORD_HINT,
    MAX_NEW_DAYS,
    MIN_RSA_BITS,
    NEW_KEY_SIZES,
    CertificateInfo,
    LoadedCertificate,
    inspect_loaded,
    iso_utc,
    key_description,
    load_file,
)
from .dn import invisible_character, windows_dn
from .errors import UserError
from .text import code_point, printable


@dataclass(frozen=True)
class NewCertificate:
    """What `create_self_signed` made, ready to write."""

    pfx: bytes
    cer: bytes
    info: CertificateInfo


def pfx_encryption(password: str, *, legacy: bool = False) -> serialization.KeySerializationEncryption:
    """PKCS#12 encryption Windows imports.

    Default AES-256-CBC with PBKDF2-HMAC-SHA256 (PBES2) and a SHA-256 MAC: Windows 10
    1709 / Windows Server 2019 and later import it; Windows Server 2016 and older refuse
    it ("The specified network password is not correct"). `legacy`: 3-key 3DES with
    SHA-1 (PBES1) and a SHA-1 MAC, which every Windows imports.
    """
    builder = serialization.PrivateFormat.PKCS12.encryption_builder()
    secret = password.encode("utf-8")
    if legacy:
        return (
            builder.kdf_rounds(50_000)
            .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
            .hmac_hash(hashes.SHA1())  # noqa: S303 - required by the legacy format
            .build(secret)
        )
    return (
        builder.kdf_rounds(100_000)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(secret)
    )


_DNS_NAME = re.compile(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+")


def create_self_signed(
    subject: x509.Name,
    password: str,
    *,
    days: int = 365,
    key_size: int = 2048,
    legacy_pfx: bool = False,
    now: datetime | None = None,
) -> NewCertificate:
    """A self-signed RSA/SHA-256 certificate for evaluation, as PFX and DER bytes.

    Extensions mirror what Windows' New-SelfSignedCertificate puts on its default
    (SSLServerAuthentication) certificate: key usage digitalSignature + keyEncipherment,
    extended key usage serverAuth + clientAuth, so the certificate behaves on the CRM
    server like one Microsoft's own tooling would make; plus basicConstraints CA=false,
    subject/authority key identifiers, and the CN as DNS name when it is one.
    """
    if key_size not in NEW_KEY_SIZES:
        raise UserError("--key-size: use 2048, 3072 or 4096")
    if not 1 <= days <= MAX_NEW_DAYS:
        raise UserError(f"--days: between 1 and {MAX_NEW_DAYS}")
    if not password:
        raise UserError("PFX password: empty")
    now = (now or datetime.now(timezone.utc)).replace(microsecond=0)
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    not_before = now - timedelta(minutes=5)  # tolerate a little clock skew on the server
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
    )
    cns = [a.value for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if cns and isinstance(cns[0], str) and _DNS_NAME.fullmatch(cns[0]):
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(cns[0])]), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    first = cns[0] if cns else None
    label = first.decode("utf-8", "replace") if isinstance(first, bytes) else first
    name = (label or "psbridge S2S").encode("utf-8")
    pfx = pkcs12.serialize_key_and_certificates(name, key, cert, None, pfx_encryption(password, legacy=legacy_pfx))
    cer = cert.public_bytes(serialization.Encoding.DER)
    info = inspect_loaded(LoadedCertificate(cert, key, 1, "pfx"), "<new>", now=now)
    return NewCertificate(pfx=pfx, cer=cer, info=info)


@dataclass(frozen=True)
class LikeCertificate:
    """What `cert new --like OLD` takes from the certificate it renews, overrides applied."""

    path: str
    subject: x509.Name  # OLD's subject as decoded: same RDNs, same order, same attribute and string types
    subject_text: str  # Windows form (what FindBySubjectDistinguishedName compares)
    thumbprint: str
    days: int  # OLD's NotAfter - NotBefore in days, rounded, unless --days overrides it
    key_size: int  # OLD's RSA key size, at least 2048, unless --key-size overrides it
    warnings: tuple[str, ...]


def _new_key_size_like(path: Path, public_key: Any) -> tuple[int, str | None]:
    """The RSA key size `cert new` makes for a certificate like one with `public_key`, and why, if not the same."""
    key_type, size = key_description(public_key)
    if key_type != "RSA" or size is None:
        return MIN_RSA_BITS, f"--like: {path}: its key is {key_type}; psbridge makes RSA, so the new key is RSA {MIN_RSA_BITS} bits"
    if size < MIN_RSA_BITS:
        return MIN_RSA_BITS, f"--like: {path}: its RSA key has {size} bits, below {MIN_RSA_BITS}; the new key has {MIN_RSA_BITS} bits"
    if size in NEW_KEY_SIZES:
        return size, None
    bigger = [s for s in NEW_KEY_SIZES if s > size]
    made = bigger[0] if bigger else NEW_KEY_SIZES[-1]
    return made, f"--like: {path}: its RSA key has {size} bits, a size psbridge does not make; the new key has {made} bits"


def _refuse_invisible(path: Path, subject: x509.Name) -> None:
    """OLD's subject becomes the new certificate's: like a typed --subject, it may hold no control or
    invisible character (they would hide or reorder text wherever the new certificate is shown)."""
    for attribute in subject:
        value = attribute.value
        found = invisible_character(value) if isinstance(value, str) else None
        if found is not None:
            raise UserError(f"--like: {printable(str(path))}: its subject contains a control character or an "
                            f"invisible one ({code_point(found)}); psbridge does not make a certificate with it, "
                            "give --subject instead")


def like_certificate(
    path: Path | str,
    password: str | None,
    *,
    days: int | None = None,
    key_size: int | None = None,
    password_hint: str = PASSWORD_HINT,
) -> LikeCertificate:
    """Subject, validity length and key size of the certificate in `path`, for its renewal.

    The subject is OLD's decoded `x509.Name`, re-encoded as it was (same RDNs in the same
    order, same string types), so that FindBySubjectDistinguishedName finds the new
    certificate with the value that found the old one. Validity: (NotAfter - NotBefore)
    in days, rounded half up. Key size: OLD's RSA key size; below 2048 bits (or not RSA)
    it becomes 2048, with a warning. `days` / `key_size` (the options) override them.
    OLD is not judged: an expired certificate is the usual one to renew.
    """
    path = Path(path)
    try:
        loaded = load_file(path, password, password_hint=password_hint)
    except UserError as exc:
        raise UserError(*(f"--like: {p}" for p in exc.problems)) from None
    cert = loaded.certificate
    subject_text = windows_dn(cert.subject)
    if not subject_text.strip():
        raise UserError(f"--like: {path}: empty subject; nothing to copy, give --subject instead")
    _refuse_invisible(path, cert.subject)
    if not cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        raise UserError(f"--like: {path}: the subject {subject_text!r} has no CN; psbridge makes certificates with one, "
                        "give --subject instead")
    warnings: list[str] = []
    if days is None:
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        days = int(lifetime / timedelta(days=1) + 0.5)
        if not 1 <= days <= MAX_NEW_DAYS:
            raise UserError(f"--like: {path}: valid for {days} days ({iso_utc(cert.not_valid_before_utc)} to "
                            f"{iso_utc(cert.not_valid_after_utc)}); psbridge makes 1 to {MAX_NEW_DAYS}, give --days")
    if key_size is None:
        key_size, why = _new_key_size_like(path, cert.public_key())
        if why:
            warnings.append(why)
    der = cert.public_bytes(serialization.Encoding.DER)
    return LikeCertificate(
        path=str(path),
        subject=cert.subject,
        subject_text=subject_text,
        thumbprint=hashlib.sha1(der).hexdigest().upper(),  # noqa: S324 - the thumbprint is SHA-1 by definition
        days=days,
        key_size=key_size,
        warnings=tuple(warnings),
    )


def default_file_stem(subject: x509.Name) -> str:
    """A file name stem from the CN: letters, digits, '.', '-', '_'; 's2s' if nothing is left."""
    cns = [a.value for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(cns[0]) if cns else "").strip("._-")
    return stem[:64] or "s2s"


def check_stem(stem: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", stem):
        raise UserError(f"--name: {stem!r} is not a plain file name (letters, digits, '.', '-', '_')")
    return stem


# --------------------------------------------------------------------------- writing
