# psbridge step 02/08: certificate - Prepare the certificate
# Article, step 2: CertificateReconfiguration.ps1 -certificateFile ... -password ... -updateCrm
#   -certificateType ... -serviceAccount ... -storeFindType ...
# Changes state: yes. Imports the PFX into LocalMachine\My, grants the service account access
# to its private key and stores the certificate in the CRM configuration database.
# Deviations from the article: the script is called with & and parameters (no command string,
# no Invoke-Expression), from the Tools folder as the article's .\ implies, and the PFX
# password is a SecureString, turned into text only inside the call.
param(
    [securestring] $PfxPassword
)
$ErrorActionPreference = 'Stop'

$ToolsDir = 'C:\Program Files\Microsoft Dynamics CRM\Tools'
$CertificateScript = [System.IO.Path]::Combine($ToolsDir, 'CertificateReconfiguration.ps1')
if ($null -eq $PfxPassword) {
    $PfxPassword = Read-Host -AsSecureString -Prompt 'Password of the PFX file'
}

Push-Location -LiteralPath $ToolsDir
try {
    & $CertificateScript -certificateFile 'C:\Personalcertfile.pfx' -password ([System.Net.NetworkCredential]::new('', $PfxPassword).Password) -updateCrm -certificateType 'S2STokenIssuer' -serviceAccount 'contoso\CRMWebApplicationService' -storeFindType 'FindBySubjectDistinguishedName'
}
finally {
    Pop-Location
}
