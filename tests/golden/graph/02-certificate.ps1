# psbridge step 02/08: certificate - Prepare the certificate
# Article, step 2, called as in profile msonline (& with parameters, SecureString password).
# Changes state: yes. Imports the PFX into LocalMachine\My, grants the service account access
# to its private key and stores the certificate in the CRM configuration database.
# Profile graph: skipped, saying so, when the CRM already uses this certificate (the .cer's
# thumbprint) as its S2S token issuer, LocalMachine\My holds exactly one certificate with its
# subject and the service account can read its private key, so that running the package twice
# changes nothing. After the call the step fails on a non-zero exit code and proves the result
# (the certificate with its private key, the service account's read access by SID, the CRM's
# certificate record with the certificate's data).
param(
    [securestring] $PfxPassword
)
$ErrorActionPreference = 'Stop'

$ToolsDir = 'C:\Program Files\Microsoft Dynamics CRM\Tools'
$CertificateType = 'S2STokenIssuer'
$ServiceAccount = 'contoso\CRMWebApplicationService'
$CertificateScript = [System.IO.Path]::Combine($ToolsDir, 'CertificateReconfiguration.ps1')
$Wanted = New-Object System.Security.Cryptography.X509Certificates.X509Certificate2
$Wanted.Import('C:\Personalcertfile.cer')
if (-not (Get-PSSnapin -Name 'Microsoft.Crm.PowerShell' -ErrorAction SilentlyContinue)) {
    Add-PSSnapin Microsoft.Crm.PowerShell
}
# Who may read a certificate's private key, by SID (names are localized and come in several
# forms; generic rights appear as numbers). The key file is looked up in both machine key
# stores: CNG (%ProgramData%\Microsoft\Crypto\Keys) and CSP (...\Crypto\RSA\MachineKeys).
function Get-PSBridgeAccountSid([string] $Account) {
    if ($Account -eq 'Network Service' -or $Account -eq 'NT AUTHORITY\NETWORK SERVICE') {
        return 'S-1-5-20'
    }
    try {
        return ([System.Security.Principal.NTAccount]$Account).Translate([System.Security.Principal.SecurityIdentifier]).Value
    }
    catch {
        return $null
    }
}
function Get-PSBridgeKeyAccess($Certificate, [string] $AccountSid) {
    $Access = [ordered]@{ key_file = $null; key_store = $null; readable = $null; via = $null; note = $null }
    $Names = @()
    try {
        $Key = [System.Security.Cryptography.X509Certificates.RSACertificateExtensions]::GetRSAPrivateKey($Certificate)
        if ($Key -is [System.Security.Cryptography.RSACng]) {
            $Names += $Key.Key.UniqueName
        }
        elseif ($Key -is [System.Security.Cryptography.RSACryptoServiceProvider]) {
            $Names += $Key.CspKeyContainerInfo.UniqueKeyContainerName
        }
    }
    catch {
        $Access.note = 'the private key cannot be opened: ' + $_.Exception.Message
        return [pscustomobject]$Access
    }
    $Stores = [ordered]@{
        'CNG' = [System.IO.Path]::Combine($env:ProgramData, 'Microsoft\Crypto\Keys')
        'CSP' = [System.IO.Path]::Combine($env:ProgramData, 'Microsoft\Crypto\RSA\MachineKeys')
    }
    foreach ($Name in @($Names | Where-Object { $_ })) {
        foreach ($Store in $Stores.Keys) {
            $Candidate = [System.IO.Path]::Combine($Stores[$Store], $Name)
            if (-not $Access.key_file -and (Test-Path -LiteralPath $Candidate -PathType Leaf)) {
                $Access.key_file = $Candidate
                $Access.key_store = $Store
            }
        }
    }
    if (-not $Access.key_file) {
        $Access.note = 'the key file is in neither machine key store'
        return [pscustomobject]$Access
    }
    if (-not $AccountSid) {
        $Access.note = 'the service account cannot be resolved to a SID'
        return [pscustomobject]$Access
    }
    # ReadData (0x1), GENERIC_ALL (0x10000000), GENERIC_READ (0x80000000 = [int]::MinValue)
    $ReadBits = 0x1 -bor 0x10000000 -bor [int]::MinValue
    $Rules = @((Get-Acl -LiteralPath $Access.key_file).GetAccessRules($true, $true, [System.Security.Principal.SecurityIdentifier]))
    $Denied = @($Rules | Where-Object { $_.AccessControlType -eq 'Deny' -and $_.IdentityReference.Value -eq $AccountSid -and ([int]$_.FileSystemRights -band $ReadBits) -ne 0 })
    $Allowed = @($Rules | Where-Object { $_.AccessControlType -eq 'Allow' -and ([int]$_.FileSystemRights -band $ReadBits) -ne 0 })
    # Everyone and Authenticated Users contain every service account.
    $Direct = @($Allowed | Where-Object { $_.IdentityReference.Value -eq $AccountSid })
    $Everyone = @($Allowed | Where-Object { @('S-1-1-0', 'S-1-5-11') -contains $_.IdentityReference.Value })
    if ($Denied.Count -gt 0) {
        $Access.readable = $false
        $Access.via = 'denied'
    }
    elseif ($Direct.Count -gt 0) {
        $Access.readable = $true
        $Access.via = 'account'
    }
    elseif ($Everyone.Count -gt 0) {
        $Access.readable = $true
        $Access.via = 'everyone'
    }
    else {
        $Groups = @($Allowed | ForEach-Object { $_.IdentityReference.Value } | Where-Object { $_ -notmatch '^S-1-5-(18|19|32-544)$' })
        if ($Groups.Count -gt 0) {
            $Access.note = 'read access is granted only to ' + ($Groups -join ', ') + '; whether the service account is a member cannot be told here'
        }
        else {
            $Access.readable = $false
            $Access.note = 'no read access for the service account'
        }
    }
    return [pscustomobject]$Access
}
$InStore = @(Get-ChildItem -LiteralPath 'Cert:\LocalMachine\My' | Where-Object { $_.Subject -eq $Wanted.Subject })
$Current = @(Get-CrmCertificate | Where-Object { $_.CertificateType -eq $CertificateType })
$CurrentThumbprints = @($Current | ForEach-Object { [System.Security.Cryptography.X509Certificates.X509Certificate2]::new([System.Convert]::FromBase64String($_.Data)).Thumbprint })
$Readable = $false
if ($InStore.Count -eq 1 -and $InStore[0].Thumbprint -eq $Wanted.Thumbprint -and $InStore[0].HasPrivateKey) {
    $Readable = (Get-PSBridgeKeyAccess $InStore[0] (Get-PSBridgeAccountSid $ServiceAccount)).readable -eq $true
}
if ($Readable -and $CurrentThumbprints -contains $Wanted.Thumbprint) {
    Write-Output ('Already configured: ' + $CertificateType + ' is ' + $Wanted.Thumbprint + '.')
    return
}

if ($null -eq $PfxPassword) {
    $PfxPassword = Read-Host -AsSecureString -Prompt 'Password of the PFX file'
}
Push-Location -LiteralPath $ToolsDir
try {
    $global:LASTEXITCODE = 0
    & $CertificateScript -certificateFile 'C:\Personalcertfile.pfx' -password ([System.Net.NetworkCredential]::new('', $PfxPassword).Password) -updateCrm -certificateType $CertificateType -serviceAccount 'contoso\CRMWebApplicationService' -storeFindType 'FindBySubjectDistinguishedName'
}
finally {
    Pop-Location
}
# Added by psbridge: proof that CertificateReconfiguration.ps1 did its work. It reports with
# exit codes and Write-Host, and neither stops this script: an "exit N" inside a script called
# with & only sets $LASTEXITCODE (global), and Write-Host goes to the Information stream. The
# exit code is kept here and judged only after the proof: $LASTEXITCODE is also the last one of any
# program the vendor script ran, so a leftover non-zero code does not fail a change that took effect.
$ExitCode = $global:LASTEXITCODE
$Problems = New-Object 'System.Collections.Generic.List[string]'
$Installed = @(Get-ChildItem -LiteralPath 'Cert:\LocalMachine\My' | Where-Object { $_.Thumbprint -eq $Wanted.Thumbprint })
if ($Installed.Count -eq 0) {
    $Problems.Add('the certificate ' + $Wanted.Thumbprint + ' is not in Cert:\LocalMachine\My')
}
elseif (-not $Installed[0].HasPrivateKey) {
    $Problems.Add('the certificate ' + $Wanted.Thumbprint + ' is in Cert:\LocalMachine\My without its private key')
}
else {
    $Access = Get-PSBridgeKeyAccess $Installed[0] (Get-PSBridgeAccountSid $ServiceAccount)
    if ($Access.readable -ne $true) {
        $Problems.Add('the service account ' + $ServiceAccount + ' cannot be shown to read the private key ' + $Access.key_file + ' (' + $Access.note + $Access.via + ')')
    }
}
$WantedData = [System.Convert]::ToBase64String($Wanted.RawData)
$Records = @(Get-CrmCertificate | Where-Object { $_.CertificateType -eq $CertificateType -and ($_.Data -replace '\s', '') -eq $WantedData })
if ($Records.Count -eq 0) {
    $Problems.Add('the CRM has no ' + $CertificateType + ' certificate record with the data of ' + $Wanted.Thumbprint)
}
if ($Problems.Count -gt 0) {
    throw ('CertificateReconfiguration.ps1 returned (exit code ' + $ExitCode + '; its messages are above, psbridge run records them as information), but:' + [Environment]::NewLine + ' - ' + ($Problems -join ([Environment]::NewLine + ' - ')))
}
if ($ExitCode -ne 0) {
    Write-Output ('CertificateReconfiguration.ps1 ended with exit code ' + $ExitCode + ', but every check of its work passed: the change took effect (the code may be left over from a program it ran).')
}
Write-Output ('Certificate ' + $Wanted.Thumbprint + ': in LocalMachine\My with its private key, readable by ' + $ServiceAccount + ', and the CRM''s ' + $CertificateType + ' certificate.')
