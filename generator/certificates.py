"""The S2S certificate: load, inspect, check, create and export it with `cryptography`.

Pure functions that return dataclasses; no click, no printing, no openssl subprocess.
Bad input (unreadable file, wrong password, not a certificate, ...) raises `UserError`
with one line that names the file; nothing here ever puts a password in a message.

The Windows distinguished-name codec (`windows_dn`, `parse_subject`) is in generator/dn.py.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID

from .clock import format_time
from .dn import windows_dn
from .errors import UserError
from .expiry import EXPIRY_WARNING_DAYS  # a certificate that ends within this many days gets a warning
from .files import read_regular, write_files

#: Environment variable that holds the PFX password (never a command-line flag).
PFX_PASSWORD_ENV = "PSBRIDGE_PFX_PASSWORD"
#: `cert new --like OLD.pfx`: the old PFX's password, kept apart from the new PFX's.
LIKE_PFX_PASSWORD_ENV = "PSBRIDGE_LIKE_PFX_PASSWORD"

PFX_SUFFIXES = frozenset({".pfx", ".p12"})
CER_SUFFIXES = frozenset({".cer", ".crt", ".pem", ".der"})

MIN_RSA_BITS = 2048
#: What `cert new` makes: RSA key sizes and the longest validity in days.
NEW_KEY_SIZES = (2048, 3072, 4096)
MAX_NEW_DAYS = 3650

Level = Literal["error", "warning"]

# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Finding:
    """One problem with the certificate. `code` is stable; `message` is for people."""

    level: Level
    code: str
    message: str


@dataclass(frozen=True)
class CertificateInfo:
    """What psbridge knows about one certificate file. Times are aware UTC datetimes."""

    path: str
    format: Literal["pfx", "der", "pem"]
    subject: str  # Windows form, see windows_dn
    subject_rfc4514: str
    issuer: str
    serial_number: str  # uppercase hex as Windows' X509Certificate2.SerialNumber shows it
    thumbprint: str  # SHA-1 of the DER, uppercase hex
    sha256: str  # SHA-256 of the DER, uppercase hex
    not_before: datetime
    not_after: datetime
    key_type: str
    key_size: int | None
    signature_algorithm: str
    signature_hash: str | None
    has_private_key: bool | None  # None: not a PFX, so not applicable
    private_key_matches: bool | None
    key_usage: tuple[str, ...]
    extended_key_usage: tuple[str, ...]
    self_signed: bool
    certificate_count: int
    der_base64: str  # the article's $CredentialValue
    findings: tuple[Finding, ...] = field(default=())

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.level == "error")

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.level == "warning")

    @property
    def der(self) -> bytes:
        return base64.b64decode(self.der_base64)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["not_before"] = iso_utc(self.not_before)
        data["not_after"] = iso_utc(self.not_after)
        data["key_usage"] = list(self.key_usage)
        data["extended_key_usage"] = list(self.extended_key_usage)
        data["findings"] = [asdict(f) for f in self.findings]
        return data


@dataclass(frozen=True)
class LoadedCertificate:
    """A parsed file: the certificate, the private key if any, how many certificates."""

    certificate: x509.Certificate
    private_key: Any | None
    certificate_count: int
    format: Literal["pfx", "der", "pem"]


def iso_utc(moment: datetime) -> str:
    """`YYYY-MM-DDTHH:MM:SSZ` in UTC (clock.format_time; a naive time is UTC)."""
    return format_time(moment)


def is_pfx_path(path: Path | str) -> bool:
    return Path(path).suffix.lower() in PFX_SUFFIXES


# --------------------------------------------------------------------------- loading


#: Far above any certificate file (a .pfx with its chain is a few KiB).
MAX_CERTIFICATE_BYTES = 1024 * 1024


def _read_bytes(path: Path) -> bytes:
    """The file's bytes through files.read_regular: a FIFO or a device is refused, never read."""
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a certificate file")
    if not os.path.lexists(path):
        raise UserError(f"{path}: no such file")
    data = read_regular(path, str(path), limit=MAX_CERTIFICATE_BYTES, too_large="too large for a certificate file")
    if not data:
        raise UserError(f"{path}: empty file")
    return data


def _der_outer_length(data: bytes) -> int | None:
    """Total length the outer DER SEQUENCE claims (header included), or None if not one."""
    if len(data) < 2 or data[0] != 0x30:
        return None
    first = data[1]
    if first < 0x80:
        return 2 + first
    count = first & 0x7F
    if count == 0 or count > 4 or len(data) < 2 + count:
        return None
    return 2 + count + int.from_bytes(data[2 : 2 + count], "big")


def _looks_like_pkcs12(data: bytes) -> bool:
    """PFX ::= SEQUENCE { version INTEGER (3), authSafe ContentInfo, ... }."""
    first = data[1] if len(data) > 1 else 0
    header = 2 + (first & 0x7F if first >= 0x80 else 0)
    return data[header : header + 3] == b"\x02\x01\x03"


def _truncation_check(path: Path, data: bytes, what: str) -> None:
    claimed = _der_outer_length(data)
    if claimed is None:
        raise UserError(f"{path}: not a {what}")
    if claimed > len(data):
        raise UserError(f"{path}: truncated: {len(data)} bytes, but its header announces {claimed}")


PASSWORD_HINT = f"set {PFX_PASSWORD_ENV} or pass --password-stdin"


def load_file(path: Path | str, password: str | None = None, *, password_hint: str = PASSWORD_HINT) -> LoadedCertificate:
    """Parse a .pfx/.p12 (with `password`) or a .cer/.crt/.pem/.der file (DER or PEM).

    `password_hint` completes "the PFX needs a password; ..." (where the password comes from).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in PFX_SUFFIXES | CER_SUFFIXES:
        raise UserError(f"{path}: unknown kind of file; expected .pfx, .p12, .cer, .crt, .pem or .der")
    data = _read_bytes(path)
    if suffix in PFX_SUFFIXES:
        return _load_pfx(path, data, password, password_hint)
    return _load_cer(path, data)


def _load_cer(path: Path, data: bytes) -> LoadedCertificate:
    if b"-----BEGIN " in data:  # PEM, perhaps after explanatory text such as openssl's "Bag Attributes"
        count = data.count(b"-----BEGIN CERTIFICATE-----") + data.count(b"-----BEGIN X509 CERTIFICATE-----")
        if count == 0:
            raise UserError(f"{path}: a PEM file without a certificate (no BEGIN CERTIFICATE block)")
        try:
            certs = x509.load_pem_x509_certificates(data)
        except ValueError:
            raise UserError(f"{path}: damaged PEM certificate (truncated or not base64)") from None
        if len(certs) != 1:
            raise UserError(f"{path}: holds {len(certs)} certificates; give a file with exactly one")
        return LoadedCertificate(certs[0], None, 1, "pem")
    _truncation_check(path, data, "certificate (DER or PEM)")
    try:
        cert = x509.load_der_x509_certificate(data)
    except ValueError:
        if _looks_like_pkcs12(data):
            raise UserError(f"{path}: is a PKCS#12 (PFX) file; name it .pfx or .p12") from None
        raise UserError(f"{path}: not a certificate (DER or PEM)") from None
    return LoadedCertificate(cert, None, 1, "der")


def _load_pfx(path: Path, data: bytes, password: str | None, password_hint: str = PASSWORD_HINT) -> LoadedCertificate:
    _truncation_check(path, data, "PKCS#12 (PFX) file")
    if not _looks_like_pkcs12(data):
        raise UserError(f"{path}: not a PKCS#12 (PFX) file")
    attempts: list[bytes | None] = [password.encode("utf-8")] if password else [None, b""]
    loaded = None
    for secret in attempts:
        try:
            loaded = pkcs12.load_pkcs12(data, secret)
            break
        except ValueError:
            continue
        except UnsupportedAlgorithm as exc:
            raise UserError(f"{path}: uses an encryption psbridge cannot read ({exc})") from None
    if loaded is None:
        if password:
            raise UserError(f"{path}: wrong password (or a damaged PFX file)")
        raise UserError(f"{path}: the PFX needs a password; {password_hint}")
    key = loaded.key
    certs = ([loaded.cert] if loaded.cert is not None else []) + list(loaded.additional_certs)
    if not certs:
        raise UserError(f"{path}: the PFX holds no certificate")
    main = certs[0].certificate
    if loaded.cert is None and key is not None:
        # The key's certificate was not marked as such; take the one whose public key matches.
        for candidate in certs:
            if _same_public_key(candidate.certificate.public_key(), key.public_key()):
                main = candidate.certificate
                break
    return LoadedCertificate(main, key, len(certs), "pfx")


def _spki(public_key: Any) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _same_public_key(a: Any, b: Any) -> bool:
    try:
        return _spki(a) == _spki(b)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False


# --------------------------------------------------------------------------- inspection

_KEY_USAGE_FIELDS = (
    ("digital_signature", "digitalSignature"),
    ("content_commitment", "nonRepudiation"),
    ("key_encipherment", "keyEncipherment"),
    ("data_encipherment", "dataEncipherment"),
    ("key_agreement", "keyAgreement"),
    ("key_cert_sign", "keyCertSign"),
    ("crl_sign", "cRLSign"),
)

_EKU_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage",
}


def windows_serial(serial: int) -> str:
    """Uppercase hex of the DER INTEGER bytes, as X509Certificate2.SerialNumber shows it."""
    length = max(1, (serial.bit_length() + 8) // 8)
    return serial.to_bytes(length, "big", signed=True).hex().upper()


def key_description(public_key: Any) -> tuple[str, int | None]:
    if isinstance(public_key, rsa.RSAPublicKey):
        return "RSA", public_key.key_size
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"EC ({public_key.curve.name})", public_key.key_size
    if isinstance(public_key, dsa.DSAPublicKey):
        return "DSA", public_key.key_size
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "Ed25519", 256
    if isinstance(public_key, ed448.Ed448PublicKey):
        return "Ed448", 456
    return type(public_key).__name__, None


def _key_usage(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return ()
    names = [label for attr, label in _KEY_USAGE_FIELDS if getattr(ku, attr)]
    if ku.key_agreement:
        if ku.encipher_only:
            names.append("encipherOnly")
        if ku.decipher_only:
            names.append("decipherOnly")
    return tuple(names)


def _extended_key_usage(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(_EKU_NAMES.get(oid, oid.dotted_string) for oid in eku)


def _is_self_signed(cert: x509.Certificate) -> bool:
    if cert.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except Exception:  # noqa: BLE001 - any failure (bad signature, unsupported key): not self-signed
        return False
    return True


def inspect_loaded(loaded: LoadedCertificate, path: Path | str, *, now: datetime | None = None) -> CertificateInfo:
    """Describe a loaded certificate and judge it for use as the S2S certificate."""
    now = now or datetime.now(timezone.utc)
    cert = loaded.certificate
    der = cert.public_bytes(serialization.Encoding.DER)
    public_key = cert.public_key()
    key_type, key_size = key_description(public_key)
    try:
        sig_hash = cert.signature_hash_algorithm
        signature_hash = sig_hash.name if sig_hash is not None else None
    except UnsupportedAlgorithm:
        signature_hash = None
    signature_algorithm = getattr(cert.signature_algorithm_oid, "_name", None) or cert.signature_algorithm_oid.dotted_string
    is_pfx = loaded.format == "pfx"
    has_key = (loaded.private_key is not None) if is_pfx else None
    private_key = loaded.private_key
    matches = _same_public_key(public_key, private_key.public_key()) if (is_pfx and private_key is not None) else None
    not_before = cert.not_valid_before_utc
    not_after = cert.not_valid_after_utc
    subject = windows_dn(cert.subject)
    self_signed = _is_self_signed(cert)

    findings: list[Finding] = []
    if now > not_after:
        findings.append(Finding("error", "expired", f"expired on {iso_utc(not_after)}"))
    if now < not_before:
        findings.append(Finding("error", "not_yet_valid", f"not valid before {iso_utc(not_before)}"))
    if is_pfx and not has_key:
        findings.append(Finding("error", "no_private_key", "the PFX holds no private key; CRM cannot sign tokens with it"))
    if matches is False:
        findings.append(Finding("error", "key_mismatch", "the private key in the PFX does not belong to the certificate"))
    if key_type == "RSA" and key_size is not None and key_size < MIN_RSA_BITS:
        findings.append(Finding("error", "weak_key", f"RSA key of {key_size} bits; at least {MIN_RSA_BITS} are needed"))
    if key_type != "RSA":
        findings.append(Finding("warning", "not_rsa", f"{key_type} key; the S2S certificate is normally RSA"))
    if not_before <= now <= not_after and not_after - now <= timedelta(days=EXPIRY_WARNING_DAYS):
        days = (not_after - now).days
        findings.append(Finding("warning", "expires_soon", f"expires in {days} days, on {iso_utc(not_after)}"))
    if signature_hash in {"sha1", "md5"}:
        findings.append(Finding("warning", "weak_signature", f"signed with {signature_hash.upper()}; use SHA-256"))
    if self_signed:
        findings.append(Finding("warning", "self_signed", "self-signed: fine for evaluation only"))
    if loaded.certificate_count > 1:
        findings.append(
            Finding("warning", "several_certificates", f"the PFX holds {loaded.certificate_count} certificates; psbridge uses the one with the private key")
        )
    if not subject:
        findings.append(Finding("warning", "empty_subject", "empty subject; FindBySubjectDistinguishedName cannot find it"))

    return CertificateInfo(
        path=str(path),
        format=loaded.format,
        subject=subject,
        subject_rfc4514=cert.subject.rfc4514_string(),
        issuer=windows_dn(cert.issuer),
        serial_number=windows_serial(cert.serial_number),
        thumbprint=hashlib.sha1(der).hexdigest().upper(),  # noqa: S324 - the thumbprint is SHA-1 by definition
        sha256=hashlib.sha256(der).hexdigest().upper(),
        not_before=not_before,
        not_after=not_after,
        key_type=key_type,
        key_size=key_size,
        signature_algorithm=signature_algorithm,
        signature_hash=signature_hash,
        has_private_key=has_key,
        private_key_matches=matches,
        key_usage=_key_usage(cert),
        extended_key_usage=_extended_key_usage(cert),
        self_signed=self_signed,
        certificate_count=loaded.certificate_count,
        der_base64=base64.b64encode(der).decode("ascii"),
        findings=tuple(findings),
    )


def inspect_file(path: Path | str, password: str | None = None, *, now: datetime | None = None) -> CertificateInfo:
    """Load and describe a certificate file; `UserError` for files that cannot be read as one."""
    return inspect_loaded(load_file(path, password), path, now=now)


# --------------------------------------------------------------------------- plan helpers


def certificate_facts(info: CertificateInfo) -> dict[str, Any]:
    """The facts the plan records (plan.json, REVIEW.md) and the approver checks."""
    return {
        "subject": info.subject,
        "thumbprint": info.thumbprint,
        "sha256": info.sha256,
        "not_before": iso_utc(info.not_before),
        "not_after": iso_utc(info.not_after),
        "serial": info.serial_number,
        "issuer": info.issuer,
        "self_signed": info.self_signed,
    }


#: The X509FindType names that select a certificate by (part of) its subject.
_SUBJECT_FIND_TYPES = {"findbysubjectdistinguishedname", "findbysubjectname"}


def subject_fits_store_find_type(info: CertificateInfo, store_find_type: str) -> str | None:
    """An error text when the certificate cannot be found with `store_find_type`, else None."""
    kind = (store_find_type or "").strip().lower()
    if kind in _SUBJECT_FIND_TYPES and not info.subject.strip():
        return f"the certificate has an empty subject, so {store_find_type} cannot find it; use a certificate with a CN"
    if kind == "findbysubjectname" and "CN=" not in info.subject:
        return f"the certificate's subject has no CN, so {store_find_type} cannot find it reliably"
    return None


def export_cer(path: Path | str, password: str | None, out: Path | str, *, force: bool = False, now: datetime | None = None) -> CertificateInfo:
    """Write the DER (.cer) of the certificate in `path` to `out`; return its description."""
    loaded = load_file(path, password)
    info = inspect_loaded(loaded, path, now=now)
    der = loaded.certificate.public_bytes(serialization.Encoding.DER)
    write_files([(Path(out), der)], 0o644, overwrite=force)
    return info



def describe(info: CertificateInfo) -> list[str]:
    """The human-readable report of `psbridge cert inspect` (and `cert new`), one line each."""
    from .text import printable

    if info.has_private_key is None:
        private = "not applicable (a certificate file holds no key)"
    elif not info.has_private_key:
        private = "no"
    else:
        private = "yes, matches the certificate" if info.private_key_matches else "yes, but it does NOT match the certificate"
    rows = [
        ("File", f"{info.path} ({info.format.upper()})"),
        ("Subject", info.subject or "(empty)"),
        ("Issuer", info.issuer or "(empty)"),
        ("Serial number", info.serial_number),
        ("Thumbprint (SHA-1)", info.thumbprint),
        ("SHA-256", info.sha256),
        ("Not before (UTC)", iso_utc(info.not_before)),
        ("Not after (UTC)", iso_utc(info.not_after)),
        ("Key", f"{info.key_type} {info.key_size} bits" if info.key_size else info.key_type),
        ("Private key", private),
        ("Signature", info.signature_algorithm),
        ("Key usage", ", ".join(info.key_usage) or "(none)"),
        ("Extended key usage", ", ".join(info.extended_key_usage) or "(none)"),
        ("Self-signed", "yes" if info.self_signed else "no"),
        ("Certificates in file", str(info.certificate_count)),
    ]
    width = max(len(label) for label, _ in rows) + 1
    # Every value is escaped (`text.printable`): a file name or a certificate's text must not
    # drive the terminal or reverse what follows it (the subject is escaped by windows_dn too).
    lines = [f"{label + ':':<{width}} {printable(str(value))}" for label, value in rows]
    lines.append("CredentialValue (the article's $CredentialValue): base64 of the DER, 64 per line")
    # wrapped like PEM (RFC 7468); joined without the line breaks it is the one-line value
    lines.extend(f"  {info.der_base64[i:i + 64]}" for i in range(0, len(info.der_base64), 64))
    if info.findings:
        lines.append("Findings:")
        lines.extend(f"  {f.level}: {printable(f.message)}" for f in info.findings)
    else:
        lines.append("Findings: none")
    return lines


# --------------------------------------------------------------------------- the plan's certificate


@dataclass(frozen=True)
class PlanCertificate:
    """The local copy of the certificate named by `[certificate] local_pfx/local_cer`, checked."""

    field: str  # "certificate.local_pfx" or "certificate.local_cer"
    source: str  # as written in the parameters file
    info: CertificateInfo

    def facts(self) -> dict[str, Any]:
        """What plan.json records and the templates use: the facts plus the source and warnings."""
        return {
            **certificate_facts(self.info),
            "source": self.source,
            "warnings": [f.message for f in self.info.warnings],
        }


def _local_path(value: str, base_dir: Path | str) -> Path:
    """A `[certificate] local_*` path: `~` expanded, a relative one taken from the parameters file's folder."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else Path(base_dir) / path


def check_for_plan(
    certificate: Any,
    base_dir: Path | str,
    read_password: Any,
    *,
    now: datetime | None = None,
) -> PlanCertificate | None:
    """Read and judge the parameters' local certificate copy, if there is one.

    `certificate` is the parameters' `[certificate]` table (local_pfx, local_cer,
    store_find_type); a relative path is taken from `base_dir`, the parameters file's
    folder. `read_password()` is called only for a PFX. Error findings, and a subject
    the store_find_type cannot find, raise `UserError` (one line each, naming the field
    and the file); warnings are returned in `info.warnings` for the caller to show.
    """
    source = certificate.local_pfx or certificate.local_cer
    if not source:
        return None
    field_name = "certificate.local_pfx" if certificate.local_pfx else "certificate.local_cer"
    path = _local_path(source, base_dir)
    password = read_password() if certificate.local_pfx else None
    try:
        info = inspect_file(path, password, now=now)
    except UserError as exc:
        raise UserError(*(f"{field_name}: {p}" for p in exc.problems)) from None
    problems = [f"{field_name}: {path}: {f.message}" for f in info.errors]
    misfit = subject_fits_store_find_type(info, certificate.store_find_type)
    if misfit:
        problems.append(f"{field_name}: {path}: {misfit}")
    replaces = getattr(certificate, "replaces", None)
    if replaces and replaces.upper() == info.thumbprint.upper():
        problems.append(f"certificate.replaces: {replaces} is the thumbprint of {field_name} ({path}), the package's "
                        "own certificate: a renewal names the certificate in use now, which the new one replaces")
    if problems:
        raise UserError(*problems)
    return PlanCertificate(field=field_name, source=source, info=info)


def local_certificate(parameters: Any, base_dir: Path | str, read_password: Any) -> tuple[dict[str, Any] | None, list[str]]:
    """The parameters' `[certificate] local_pfx/local_cer` checked: (its facts for the plan, warnings).

    (None, []) when the parameters name no local copy. Error findings raise UserError
    (see `check_for_plan`); warnings are returned, one line each naming the field, for
    the caller to print.
    """
    checked = check_for_plan(parameters.certificate, base_dir, read_password)
    if checked is None:
        return None, []
    return checked.facts(), [f"{checked.field}: {finding.message}" for finding in checked.info.warnings]


def replaced_certificate(parameters: Any, base_dir: Path | str, new: dict[str, Any] | None,
                         *, now: datetime | None = None) -> dict[str, Any] | None:
    """A renewal's `[certificate] local_replaced`: the facts REVIEW.md shows of the certificate it replaces.

    Its thumbprint must be `replaces`. It is not judged (an expired certificate is what a late
    renewal replaces). When the new certificate's facts are known too (`new`, from local_pfx or
    local_cer), the two must not share a subject: both are in LocalMachine\\My during the
    renewal, and CertificateReconfiguration.ps1 (-storeFindType FindBySubjectDistinguishedName)
    fails with "Private key not found" on two certificates of one subject.
    """
    certificate = parameters.certificate
    if not certificate.local_replaced:
        return None
    path = _local_path(certificate.local_replaced, base_dir)
    try:
        info = inspect_file(path, None, now=now)
    except UserError as exc:
        raise UserError(*(f"certificate.local_replaced: {p}" for p in exc.problems)) from None
    if info.thumbprint.upper() != certificate.replaces.upper():
        raise UserError(f"certificate.local_replaced: {path} has thumbprint {info.thumbprint}, not "
                        f"certificate.replaces {certificate.replaces.upper()}")
    if new is not None and new.get("subject") == info.subject:
        raise UserError(f"certificate.local_replaced: the new certificate has the subject of the one it replaces "
                        f"({info.subject}); both are in LocalMachine\\My during the renewal, and "
                        "CertificateReconfiguration.ps1 then fails with \"Private key not found\": give the new "
                        "certificate its own subject (psbridge cert new --subject)")
    facts = certificate_facts(info)
    return {"source": certificate.local_replaced, **{k: facts[k] for k in ("subject", "thumbprint", "not_before",
                                                                          "not_after", "issuer")}}
