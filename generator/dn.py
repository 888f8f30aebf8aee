"""The Windows distinguished-name codec: a subject as Windows prints and reads it.

Windows form of the subject (`windows_dn`)
------------------------------------------
`CertificateReconfiguration.ps1 -storeFindType FindBySubjectDistinguishedName` finds the
certificate by its subject as Windows prints it. .NET's X509FindType.FindBySubjectDistinguishedName
compares the find value, ignoring case, for equality with
`CertGetNameString(CERT_NAME_RDN_TYPE, CERT_X500_NAME_STR | CERT_NAME_STR_REVERSE_FLAG)`
(dotnet/runtime FindPal.Windows.cs), the same string `X500DistinguishedName.Name` and
`$cert.Subject` show. What is verified against documentation and source:

* RDNs are printed in reverse order of the DER encoding, most specific first
  (`CN=crm.contoso.com, O=Contoso, C=US`), joined with ", " -- .NET docs
  (X500DistinguishedNameBuilder remarks, EnumerateRelativeDistinguishedNames) and the
  managed decoder dotnet/runtime `X500NameEncoder.cs`, written to match Windows.
* several attributes of one RDN are joined with " + " (X500NameEncoder.cs: "+" with
  spaces unless DoNotUsePlusSign).
* a value is put in double quotes when it is empty, starts or ends with white space
  (space, TAB, LF, VT, FF, CR) or contains any of `, + = " LF < > # ;` (not CR); a `"`
  inside a quoted value is doubled -- CertNameToStr docs (Remarks of CERT_X500_NAME_STR)
  and X500NameEncoder.cs (`s_needsQuotingChars`, "\\r is NOT in this list, because it
  isn't in Windows").
* OIDs without an X.500 key name are printed as `OID.1.2.3=` (CertNameToStr docs).
* the key names CN, L, O, OU, E, C, S, STREET, T, G, I, SN, DC are documented for
  CertStrToName/Certificate Enrollment ("creating a subject name", MS-WCCE 2.2.2.6.4.2).

What only Windows can confirm: how CertificateReconfiguration.ps1 (source not public)
builds its find value and whether it asks for valid (chain-trusted) certificates only;
the names psbridge prints for the rarer attributes
(SERIALNUMBER, PostalCode, Description, POBox, Phone, X21Address, dnQualifier, UnstructuredName,
UnstructuredAddress; everything else becomes `OID.x.y.z`), how values that are not
strings (BIT STRING, OCTET STRING) are shown (psbridge prints `#` + the hex of the
value's bytes), and whether T61String/BMPString values decode exactly like here. For the usual
subject of an S2S certificate (CN, O, OU, L, S, C, E) the form is exact.
"""

from __future__ import annotations

import re
import unicodedata

from cryptography import x509
from cryptography.x509.oid import NameOID

from .errors import UserError
from .text import code_point, printable

# --------------------------------------------------------------------------- names

#: OID -> the key name Windows' CertNameToStr(CERT_X500_NAME_STR) prints.
WINDOWS_NAME_KEYS: dict[str, str] = {
    "2.5.4.3": "CN",
    "2.5.4.7": "L",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "1.2.840.113549.1.9.1": "E",
    "2.5.4.6": "C",
    "2.5.4.8": "S",
    "2.5.4.9": "STREET",
    "2.5.4.12": "T",
    "2.5.4.42": "G",
    "2.5.4.43": "I",
    "2.5.4.4": "SN",
    "0.9.2342.19200300.100.1.25": "DC",
    "2.5.4.5": "SERIALNUMBER",
    # Less common; only Windows can confirm these (see the module docstring).
    "2.5.4.17": "PostalCode",
    "2.5.4.13": "Description",
    "2.5.4.18": "POBox",
    "2.5.4.20": "Phone",
    "2.5.4.24": "X21Address",
    "2.5.4.46": "dnQualifier",
    "1.2.840.113549.1.9.2": "UnstructuredName",
    "1.2.840.113549.1.9.8": "UnstructuredAddress",
}

#: Key names accepted in `--subject` (upper-cased) -> OID. Windows' aliases included.
SUBJECT_KEYS: dict[str, str] = {
    "CN": "2.5.4.3",
    "COMMONNAME": "2.5.4.3",
    "L": "2.5.4.7",
    "LOCALITY": "2.5.4.7",
    "O": "2.5.4.10",
    "ORG": "2.5.4.10",
    "ORGANIZATION": "2.5.4.10",
    "OU": "2.5.4.11",
    "ORGUNIT": "2.5.4.11",
    "ORGANIZATIONALUNIT": "2.5.4.11",
    "E": "1.2.840.113549.1.9.1",
    "EMAIL": "1.2.840.113549.1.9.1",
    "EMAILADDRESS": "1.2.840.113549.1.9.1",
    "C": "2.5.4.6",
    "COUNTRY": "2.5.4.6",
    "S": "2.5.4.8",
    "ST": "2.5.4.8",
    "STATE": "2.5.4.8",
    "STREET": "2.5.4.9",
    "STREETADDRESS": "2.5.4.9",
    "T": "2.5.4.12",
    "TITLE": "2.5.4.12",
    "G": "2.5.4.42",
    "GIVENNAME": "2.5.4.42",
    "I": "2.5.4.43",
    "INITIALS": "2.5.4.43",
    "SN": "2.5.4.4",
    "SURNAME": "2.5.4.4",
    "DC": "0.9.2342.19200300.100.1.25",
    "DOMAINCOMPONENT": "0.9.2342.19200300.100.1.25",
    "SERIALNUMBER": "2.5.4.5",
    "POSTALCODE": "2.5.4.17",
    "DESCRIPTION": "2.5.4.13",
}

_QUOTE_CHARS = frozenset(',+="\n<>#;')
_QUOTABLE_SPACE = frozenset(" \t\n\v\f\r")


def _windows_value(value: str | bytes) -> str:
    """One attribute value as Windows shows it, with controls, line breaks and bidi/format characters
    escaped (`text.printable`): a subject read from a certificate is shown on terminals, in JSON,
    plan.json and REVIEW.md, and must never move the cursor, end a line or reverse the text."""
    if isinstance(value, bytes):
        return "#" + value.hex().upper()
    value = printable(value)
    needs_quotes = (
        value == ""
        or value[0] in _QUOTABLE_SPACE
        or value[-1] in _QUOTABLE_SPACE
        or any(ch in _QUOTE_CHARS for ch in value)
    )
    if not needs_quotes:
        return value
    return '"' + value.replace('"', '""') + '"'


def _windows_key(oid: x509.ObjectIdentifier) -> str:
    return WINDOWS_NAME_KEYS.get(oid.dotted_string, f"OID.{oid.dotted_string}")


def windows_dn(name: x509.Name) -> str:
    """The name as Windows prints it (`X500DistinguishedName.Name`); see the module docstring."""
    parts = []
    for rdn in reversed(name.rdns):
        parts.append(" + ".join(f"{_windows_key(a.oid)}={_windows_value(a.value)}" for a in rdn))
    return ", ".join(parts)


#: Unicode categories refused in a subject psbridge creates: controls (C0, DEL, C1), format
#: characters (bidi overrides, zero-width, BOM) and line/paragraph separators.
_INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp"})


def invisible_character(value: str) -> str | None:
    """The first character of `value` a subject psbridge creates must not hold (control, format, line or
    paragraph separator), or None: `cert new --like` copies a subject it did not parse, and checks it here."""
    return next((ch for ch in value if unicodedata.category(ch) in _INVISIBLE), None)


def parse_subject(text: str) -> x509.Name:
    """Parse a subject as a Windows user types it (`CN=crm.contoso.com, O=Contoso, C=US`).

    The grammar is CertStrToName's: RDNs separated by `,` or `;`, most specific first;
    attributes of one RDN joined by `+`; white space around keys and values ignored;
    a value may be double-quoted, with `""` for a quote inside. Keys are the Windows
    names (CN, O, OU, L, S/ST, C, E, STREET, T, G, I, SN, DC, SERIALNUMBER, ...) or
    `OID.1.2.3`. Backslash escapes (RFC 4514) do not exist on Windows and are refused.
    The result is encoded in reverse, so that `windows_dn(parse_subject(s))` gives `s`
    back in canonical form. Raises `UserError` with one line.
    """
    if not text or not text.strip():
        raise UserError("--subject: empty; give e.g. \"CN=crm.contoso.com, O=Contoso\"")
    for ch in text:  # tab is white space around keys and values; refused inside a value below
        if ch != "\t" and unicodedata.category(ch) in _INVISIBLE:
            raise UserError(f"--subject: contains a control character or an invisible one ({code_point(ch)}); "
                            "they would hide or reorder text where the subject is shown")
    rdns: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    pos, end = 0, len(text)
    while True:
        # key
        while pos < end and text[pos] in " \t":
            pos += 1
        start = pos
        while pos < end and text[pos] not in "=,;+":
            pos += 1
        key = text[start:pos].strip()
        if pos >= end or text[pos] != "=":
            shown = key or text[start:pos + 1]
            raise UserError(f"--subject: expected KEY=value at {shown!r}")
        if not key:
            raise UserError("--subject: a '=' without a key before it")
        pos += 1
        # value
        while pos < end and text[pos] in " \t":
            pos += 1
        if pos < end and text[pos] == '"':
            pos += 1
            chars = []
            while True:
                if pos >= end:
                    raise UserError(f"--subject: unterminated quoted value for {key}")
                if text[pos] == '"':
                    if pos + 1 < end and text[pos + 1] == '"':
                        chars.append('"')
                        pos += 2
                        continue
                    pos += 1
                    break
                chars.append(text[pos])
                pos += 1
            value = "".join(chars)
            while pos < end and text[pos] in " \t":
                pos += 1
            if pos < end and text[pos] not in ",;+":
                raise UserError(f"--subject: unexpected text after the quoted value of {key}")
        else:
            start = pos
            while pos < end and text[pos] not in ",;+":
                if text[pos] == '"':
                    raise UserError(f"--subject: a '\"' inside the value of {key}; quote the whole value")
                pos += 1
            value = text[start:pos].strip()
            if "\\" in value:
                raise UserError(
                    f"--subject: backslash in the value of {key}; Windows does not use backslash escapes, "
                    'put the value in double quotes instead (e.g. O="Contoso, Ltd")'
                )
            if value.startswith("#"):
                raise UserError(f"--subject: hex values (#...) are not supported for {key}")
        current.append((key, value))
        if pos >= end:
            rdns.append(current)
            break
        sep = text[pos]
        pos += 1
        if sep in ",;":
            rdns.append(current)
            current = []
        if pos >= end or not text[pos:].strip():
            raise UserError(f"--subject: ends with {sep!r}; remove it or add another KEY=value")
    built: list[x509.RelativeDistinguishedName] = []
    for rdn in rdns:
        built.append(x509.RelativeDistinguishedName([_name_attribute(k, v) for k, v in rdn]))
    built.reverse()  # typed most specific first; DER holds the least specific first
    name = x509.Name(built)
    if not any(a.oid == NameOID.COMMON_NAME for a in name):
        raise UserError("--subject: needs a CN (e.g. CN=crm.contoso.com)")
    return name


def _name_attribute(key: str, value: str) -> x509.NameAttribute:
    upper = key.upper()
    if upper.startswith("OID."):
        dotted = key[4:]
    elif re.fullmatch(r"[0-9]+(\.[0-9]+)+", key):
        dotted = key
    elif upper in SUBJECT_KEYS:
        dotted = SUBJECT_KEYS[upper]
    else:
        known = ", ".join(sorted({WINDOWS_NAME_KEYS[o] for o in set(SUBJECT_KEYS.values())}))
        raise UserError(f"--subject: unknown key {key!r}; use one of {known} or OID.1.2.3")
    if not value:
        raise UserError(f"--subject: empty value for {key}")
    if "\t" in value:
        raise UserError(f"--subject: a tab inside the value of {key}; use spaces")
    if len(value) > 64 and dotted in {"2.5.4.3", "2.5.4.10", "2.5.4.11", "2.5.4.7", "2.5.4.8"}:
        raise UserError(f"--subject: the value of {key} is longer than 64 characters (RFC 5280 upper bound)")
    try:
        oid = x509.ObjectIdentifier(dotted)
        if dotted == "2.5.4.6" and not re.fullmatch(r"[A-Za-z]{2}", value):
            raise ValueError("a country is two letters (ISO 3166), e.g. C=US")
        if dotted in {"1.2.840.113549.1.9.1", "0.9.2342.19200300.100.1.25"} and not value.isascii():
            raise ValueError("must be ASCII")
        return x509.NameAttribute(oid, value)
    except ValueError as exc:
        raise UserError(f"--subject: bad value for {key}: {exc}") from None
