"""Profile msonline, step 06: the credential always gets the certificate's validity.

New-MsolServicePrincipalCredential (MSOnline reference): -EndDate defaults to one year from
today and, for an asymmetric credential, "must be set to on or before the date that the X509
certificate is valid until, otherwise an OAuth token will not be issued"; -StartDate must be on
or after the date it is valid from. Both are [DateTime].
https://learn.microsoft.com/powershell/module/msonline/new-msolserviceprincipalcredential
"""

from __future__ import annotations

from psbridge.parameters import example
from psbridge.render import render_package

from support.pwsh_grammar import syntax_errors

FACTS = {"source": "certs/s2s.pfx", "subject": "CN=crm.contoso.com", "thumbprint": "A" * 40, "sha256": "0" * 64,
         "serial": "01", "issuer": "CN=crm.contoso.com", "not_before": "2026-01-01T00:00:00Z",
         "not_after": "2036-01-01T00:00:00Z", "self_signed": True, "warnings": []}


def step06(certificate: dict | None) -> str:
    data = render_package(example(), certificate).files["steps/06-spn.ps1"]
    return data[3:].decode("utf-8").replace("\r\n", "\n")


def code(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def test_dates_come_from_the_certificate_of_step_05_with_or_without_a_local_copy() -> None:
    for certificate in (None, FACTS):
        text = code(step06(certificate))
        assert "$StartDate = $Certificate.NotBefore.ToUniversalTime()" in text
        assert "$EndDate = $Certificate.NotAfter.ToUniversalTime()" in text
        calls = [line.strip() for line in text.splitlines() if "New-MsolServicePrincipalCredential" in line]
        assert calls == ["New-MsolServicePrincipalCredential -AppPrincipalId $CRMAppId -Type asymmetric -Usage Verify "
                         "-Value $CredentialValue -StartDate $StartDate -EndDate $EndDate"]
        assert "[datetime]::Parse(" not in text
        assert syntax_errors(step06(certificate)) == []


def test_an_existing_credential_valid_through_the_expiry_is_not_added_again() -> None:
    text = code(step06(None))
    assert ("Get-MsolServicePrincipalCredential -AppPrincipalId $CRMAppId -ReturnKeyValues $true | Where-Object "
            "{ $null -ne $_ -and $_.Value -eq $CredentialValue -and $_.EndDate.ToUniversalTime() -ge $EndDate.AddSeconds(-1) }") in text
    assert text.index("if ($Existing.Count -gt 0) {") < text.index("New-MsolServicePrincipalCredential -AppPrincipalId")
