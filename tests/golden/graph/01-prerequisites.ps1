# psbridge step 01/08: prerequisites - Check the prerequisites
# Profile graph: the article's sequence with Microsoft Graph PowerShell instead of the retired
# MSOnline module. This step checks that everything the later steps use is present and stops
# with one error that lists every missing prerequisite, before anything changes.
# Changes state: no.
param()
$ErrorActionPreference = 'Stop'

$ToolsDir = 'C:\Program Files\Microsoft Dynamics CRM\Tools'
$PfxPath = 'C:\Personalcertfile.pfx'
$CerPath = 'C:\Personalcertfile.cer'
$CertificateScript = [System.IO.Path]::Combine($ToolsDir, 'CertificateReconfiguration.ps1')
$Problems = New-Object 'System.Collections.Generic.List[string]'

if ($PSVersionTable.PSEdition -ne 'Desktop' -or $PSVersionTable.PSVersion.Major -ne 5 -or $PSVersionTable.PSVersion.Minor -ne 1) {
    $Problems.Add('Windows PowerShell 5.1 is required; this is PowerShell ' + $PSVersionTable.PSVersion + ' (the CRM snap-in does not load in PowerShell 7).')
}
$Principal = New-Object System.Security.Principal.WindowsPrincipal([System.Security.Principal.WindowsIdentity]::GetCurrent())
if (-not $Principal.IsInRole([System.Security.Principal.WindowsBuiltInRole]::Administrator)) {
    $Problems.Add('The session is not elevated: run Windows PowerShell as Administrator.')
}
foreach ($Module in @('Microsoft.Graph.Authentication', 'Microsoft.Graph.Applications', 'Microsoft.Graph.Identity.DirectoryManagement')) {
    if (-not (Get-Module -ListAvailable -Name $Module)) {
        $Problems.Add('The ' + $Module + ' module is not installed (Install-Module ' + $Module + ' -Scope AllUsers).')
    }
}
if (-not (Get-PSSnapin -Registered -Name 'Microsoft.Crm.PowerShell' -ErrorAction SilentlyContinue)) {
    $Problems.Add('The Microsoft.Crm.PowerShell snap-in is not registered: run this on the Dynamics 365 Server with the Deployment Tools role.')
}
if (-not (Test-Path -LiteralPath $CertificateScript -PathType Leaf)) {
    $Problems.Add('CertificateReconfiguration.ps1 was not found: ' + $CertificateScript)
}
if (-not (Test-Path -LiteralPath $PfxPath -PathType Leaf)) {
    $Problems.Add('The PFX file was not found: ' + $PfxPath)
}
if (-not (Test-Path -LiteralPath $CerPath -PathType Leaf)) {
    $Problems.Add('The public certificate (.cer) was not found: ' + $CerPath + ' (export it from the PFX with: psbridge cert export-cer).')
}

if ($Problems.Count -gt 0) {
    throw ('Prerequisites are not met:' + [Environment]::NewLine + ' - ' + ($Problems -join ([Environment]::NewLine + ' - ')))
}
Write-Output 'Prerequisites met.'
