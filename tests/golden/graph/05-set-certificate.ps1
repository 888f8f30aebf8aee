# psbridge step 05/08: set-certificate - Set the certificate
# Article, step 5: load the public certificate and keep its DER bytes as base64 in
# $CredentialValue for step 06.
# Changes state: no (session only).
param()
$ErrorActionPreference = 'Stop'

$Certificate = New-Object System.Security.Cryptography.X509Certificates.X509Certificate2
$Certificate.Import('C:\Personalcertfile.cer')
$CERCertificateBin = $Certificate.GetRawCertData()
$CredentialValue = [System.Convert]::ToBase64String($CERCertificateBin)
Write-Output ('Certificate ' + $Certificate.Subject + ', thumbprint ' + $Certificate.Thumbprint)
