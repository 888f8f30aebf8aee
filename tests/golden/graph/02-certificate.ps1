# psbridge step 02/08: certificate - Prepare the certificate
# Article, step 2, called as in profile msonline (& with parameters, SecureString password).
# Changes state: yes. Imports the PFX into LocalMachine\My, grants the service account access
# to its private key and stores the certificate in the CRM configuration database.
# Profile graph: skipped, saying so, when the CRM already uses this certificate (the .cer's
# thumbprint) as its S2S token issuer and LocalMachine\My holds exactly one certificate with
# its subject, so that running the package twice changes nothing.
param(
    [securestring] $PfxPassword
)
$ErrorActionPreference = 'Stop'

$ToolsDir = 'C:\Program Files\Microsoft Dynamics CRM\Tools'
$CertificateType = 'S2STokenIssuer'
$CertificateScript = [System.IO.Path]::Combine($ToolsDir, 'CertificateReconfiguration.ps1')
$Wanted = New-Object System.Security.Cryptography.X509Certificates.X509Certificate2
$Wanted.Import('C:\Personalcertfile.cer')
if (-not (Get-PSSnapin -Name 'Microsoft.Crm.PowerShell' -ErrorAction SilentlyContinue)) {
    Add-PSSnapin Microsoft.Crm.PowerShell
}
$InStore = @(Get-ChildItem -LiteralPath 'Cert:\LocalMachine\My' | Where-Object { $_.Subject -eq $Wanted.Subject })
$Current = @(Get-CrmCertificate | Where-Object { $_.CertificateType -eq $CertificateType })
$CurrentThumbprints = @($Current | ForEach-Object { [System.Security.Cryptography.X509Certificates.X509Certificate2]::new([System.Convert]::FromBase64String($_.Data)).Thumbprint })
if ($InStore.Count -eq 1 -and $InStore[0].Thumbprint -eq $Wanted.Thumbprint -and $CurrentThumbprints -contains $Wanted.Thumbprint) {
    Write-Output ('Already configured: ' + $CertificateType + ' is ' + $Wanted.Thumbprint + '.')
    return
}

if ($null -eq $PfxPassword) {
    $PfxPassword = Read-Host -AsSecureString -Prompt 'Password of the PFX file'
}
Push-Location -LiteralPath $ToolsDir
try {
    & $CertificateScript -certificateFile 'C:\Personalcertfile.pfx' -password ([System.Net.NetworkCredential]::new('', $PfxPassword).Password) -updateCrm -certificateType $CertificateType -serviceAccount 'contoso\CRMWebApplicationService' -storeFindType 'FindBySubjectDistinguishedName'
}
finally {
    Pop-Location
}
