# psbridge step 01/08: prerequisites - Check the prerequisites
# Article, "Set up server-based authentication", step 1: on the Dynamics 365 Server where the
# deployment tools server role runs, start the Azure Active Directory Module for Windows
# PowerShell. This step checks that everything the later steps use is present and stops
# with one error that lists every missing prerequisite, before anything changes.
# Changes state: no.
param()
$ErrorActionPreference = 'Stop'

$Problems = New-Object 'System.Collections.Generic.List[string]'
$ToolsDir = 'C:\Program Files\Microsoft Dynamics CRM\Tools'
$PfxPath = 'C:\Personalcertfile.pfx'
$CerPath = 'C:\Personalcertfile.cer'
$CertificateScript = $null
if ($ToolsDir) {
    $CertificateScript = [System.IO.Path]::Combine($ToolsDir, 'CertificateReconfiguration.ps1')
}

if ($PSVersionTable.PSEdition -ne 'Desktop' -or $PSVersionTable.PSVersion.Major -ne 5 -or $PSVersionTable.PSVersion.Minor -ne 1) {
    $Problems.Add('Windows PowerShell 5.1 is required; this is PowerShell ' + $PSVersionTable.PSVersion + ' (snap-ins and MSOnline do not load in PowerShell 7).')
}
if (-not [System.Environment]::Is64BitProcess) {
    $Problems.Add('This is the 32-bit (x86) Windows PowerShell: the CRM snap-in and the CRM registry keys are 64-bit, so they look missing here. Run the 64-bit one (C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe).')
}
$Principal = New-Object System.Security.Principal.WindowsPrincipal([System.Security.Principal.WindowsIdentity]::GetCurrent())
if (-not $Principal.IsInRole([System.Security.Principal.WindowsBuiltInRole]::Administrator)) {
    $Problems.Add('The session is not elevated: run Windows PowerShell as Administrator.')
}
if (-not (Get-Module -ListAvailable -Name 'MSOnline')) {
    $Problems.Add('The MSOnline module (Azure Active Directory Module for Windows PowerShell) is not installed.')
}
if (-not (Get-PSSnapin -Registered -Name 'Microsoft.Crm.PowerShell' -ErrorAction SilentlyContinue)) {
    $Problems.Add('The Microsoft.Crm.PowerShell snap-in is not registered: run this on the Dynamics 365 Server with the Deployment Tools role.')
}
if ($CertificateScript -and -not (Test-Path -LiteralPath $CertificateScript -PathType Leaf)) {
    $Problems.Add('CertificateReconfiguration.ps1 was not found: ' + $CertificateScript)
}
if (-not (Test-Path -LiteralPath $PfxPath -PathType Leaf)) {
    $Problems.Add('The PFX file was not found: ' + $PfxPath)
}
if (-not (Test-Path -LiteralPath $CerPath -PathType Leaf)) {
    $Problems.Add('The public certificate (.cer) was not found: ' + $CerPath + ' (no step of the article creates it; export it from the PFX with: psbridge cert export-cer).')
}

# Known failure (Microsoft, "Troubleshoot server-based authentication",
# https://learn.microsoft.com/dynamics365/customerengagement/on-premises/admin/troubleshooting-server-based-authentication):
# CertificateReconfiguration.ps1 fails with "Private key not found" when the local certificate
# store holds two certificates with the same subject. Refused here, before anything changes.
if (Test-Path -LiteralPath $CerPath -PathType Leaf) {
    $CerSubject = (New-Object System.Security.Cryptography.X509Certificates.X509Certificate2($CerPath)).Subject
    $SameSubject = @(Get-ChildItem -LiteralPath 'Cert:\LocalMachine\My' | Where-Object { $_.Subject -eq $CerSubject })
    if ($SameSubject.Count -gt 1) {
        $Problems.Add('Cert:\LocalMachine\My holds ' + $SameSubject.Count + ' certificates with the subject ' + $CerSubject + ' (' + (($SameSubject | ForEach-Object { $_.Thumbprint }) -join ', ') + '): CertificateReconfiguration.ps1 would fail with "Private key not found". Remove the ones you do not need with the Certificate Manager MMC snap-in (Microsoft: troubleshooting-server-based-authentication).')
    }
}
# A first setup (not a renewal): CRM may already sign with a valid S2STokenIssuer certificate,
# for example the one server-side synchronization with Exchange Online uses (it shares this slot
# and the Dynamics CRM principal 00000007-0000-0000-c000-000000000000). Step 02 would replace
# it silently: refused here; a renewal replaces it deliberately.
if ((Test-Path -LiteralPath $CerPath -PathType Leaf) -and (Get-PSSnapin -Registered -Name 'Microsoft.Crm.PowerShell' -ErrorAction SilentlyContinue)) {
    if (-not (Get-PSSnapin -Name 'Microsoft.Crm.PowerShell' -ErrorAction SilentlyContinue)) {
        Add-PSSnapin Microsoft.Crm.PowerShell
    }
    $Own = (New-Object System.Security.Cryptography.X509Certificates.X509Certificate2($CerPath)).Thumbprint
    $Valid = @(Get-CrmCertificate | Where-Object { $_.CertificateType -eq 'S2STokenIssuer' } | ForEach-Object { [System.Security.Cryptography.X509Certificates.X509Certificate2]::new([System.Convert]::FromBase64String($_.Data)) } | Where-Object { $_.NotAfter.ToUniversalTime() -gt [System.DateTime]::UtcNow })
    if ($Valid.Count -gt 0 -and -not (@($Valid | ForEach-Object { $_.Thumbprint }) -contains $Own)) {
        foreach ($InUse in $Valid) {
            $Problems.Add('CRM already uses the valid S2STokenIssuer certificate ' + $InUse.Thumbprint + ', not this package''s ' + $Own + ': a first setup would replace it (server-side synchronization with Exchange Online shares it). Render a renewal with [certificate] replaces = ''' + $InUse.Thumbprint + '''.')
        }
    }
}
# The CRM cmdlets of steps 02 and 07 talk to the Deployment Web Service. Over PowerShell
# remoting (Negotiate/Kerberos) the session cannot pass the operator's credentials on: a read-only
# call here finds that second-hop problem before anything changes.
if (Get-PSSnapin -Registered -Name 'Microsoft.Crm.PowerShell' -ErrorAction SilentlyContinue) {
    try {
        if (-not (Get-PSSnapin -Name 'Microsoft.Crm.PowerShell' -ErrorAction SilentlyContinue)) {
            Add-PSSnapin Microsoft.Crm.PowerShell
        }
        $null = Get-CrmSetting -SettingType 'WebAddressSettings'
    }
    catch {
        $Reach = 'The CRM cmdlets cannot reach the Deployment Web Service from this session (Get-CrmSetting -SettingType WebAddressSettings): ' + $_.Exception.Message
        if ($null -ne $PSSenderInfo) {
            $Reach += ' Over PowerShell remoting this is usually the second hop: run with psbridge run --auth credssp, or connect to a session configuration with a RunAs account.'
        }
        $Problems.Add($Reach)
    }
}

if ($Problems.Count -gt 0) {
    throw ('Prerequisites are not met:' + [Environment]::NewLine + ' - ' + ($Problems -join ([Environment]::NewLine + ' - ')))
}
Write-Output 'Prerequisites met.'
