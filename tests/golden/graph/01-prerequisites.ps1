# psbridge step 01/08: prerequisites - Check the prerequisites
# Profile graph: the article's sequence with Microsoft Graph PowerShell instead of the retired
# MSOnline module. This step checks that everything the later steps use is present and stops
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
    $Problems.Add('Windows PowerShell 5.1 is required; this is PowerShell ' + $PSVersionTable.PSVersion + ' (the CRM snap-in does not load in PowerShell 7).')
}
if (-not [System.Environment]::Is64BitProcess) {
    $Problems.Add('This is the 32-bit (x86) Windows PowerShell: the CRM snap-in and the CRM registry keys are 64-bit, so they look missing here. Run the 64-bit one (C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe).')
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
if ($CertificateScript -and -not (Test-Path -LiteralPath $CertificateScript -PathType Leaf)) {
    $Problems.Add('CertificateReconfiguration.ps1 was not found: ' + $CertificateScript)
}
# Step 02 runs CertificateReconfiguration.ps1 as a FILE, so the execution policy applies to
# it (the steps themselves arrive as script text, which no policy blocks; about_Execution_Policies):
# Restricted runs no script file; AllSigned needs a valid signature by a trusted publisher on
# every file; RemoteSigned needs one only on a file marked as downloaded from the internet (the
# Zone.Identifier alternate data stream, which Unblock-File removes); Unrestricted asks about such
# a file unless it is signed by a trusted publisher. An untrusted publisher is asked about at run
# time, and a remote session cannot answer: that is refused too.
$ExecutionPolicy = [string](Get-ExecutionPolicy)
if ($CertificateScript -and (Test-Path -LiteralPath $CertificateScript -PathType Leaf) -and $ExecutionPolicy -ne 'Bypass') {
    $Signature = Get-AuthenticodeSignature -LiteralPath $CertificateScript
    $Trusted = $false
    if ([string]$Signature.Status -eq 'Valid' -and $null -ne $Signature.SignerCertificate) {
        foreach ($Store in @('Cert:\LocalMachine\TrustedPublisher', 'Cert:\CurrentUser\TrustedPublisher')) {
            if (Test-Path -LiteralPath ($Store + '\' + $Signature.SignerCertificate.Thumbprint)) {
                $Trusted = $true
            }
        }
    }
    $Downloaded = $null -ne (Get-Item -LiteralPath $CertificateScript -Stream 'Zone.Identifier' -ErrorAction SilentlyContinue)
    $Blocked = $null
    if ($ExecutionPolicy -eq 'AllSigned' -and -not $Trusted) {
        $Blocked = 'the execution policy is AllSigned and the file''s signature is ' + $Signature.Status + $(if ([string]$Signature.Status -eq 'Valid') { ' but its publisher is not in Trusted Publishers' } else { '' }) + '. Sign it with a certificate in Trusted Publishers, or set the policy to RemoteSigned (Set-ExecutionPolicy RemoteSigned -Scope LocalMachine; Get-ExecutionPolicy -List shows the scope that sets it, and a Group Policy scope wins).'
    }
    elseif (($ExecutionPolicy -eq 'RemoteSigned' -and $Downloaded -and -not $Trusted) -or ($ExecutionPolicy -eq 'Unrestricted' -and $Downloaded -and -not $Trusted)) {
        $Blocked = 'the execution policy is ' + $ExecutionPolicy + ' and the file is marked as downloaded from the internet (its Zone.Identifier stream)' + $(if ($ExecutionPolicy -eq 'Unrestricted') { ', so PowerShell asks before it runs' } else { ' and its signature is ' + $Signature.Status }) + '. Check the file, then unblock it: Unblock-File -LiteralPath ''' + $CertificateScript + '''.'
    }
    elseif (@('AllSigned', 'RemoteSigned', 'Unrestricted') -notcontains $ExecutionPolicy) {
        $Blocked = 'the execution policy is ' + $ExecutionPolicy + ', which runs no script file. Set it to RemoteSigned (Set-ExecutionPolicy RemoteSigned -Scope LocalMachine; Get-ExecutionPolicy -List shows the scope that sets it, and a Group Policy scope wins).'
    }
    if ($null -ne $Blocked) {
        $Problems.Add('Step 02 runs ' + $CertificateScript + ' as a file, and PowerShell would refuse it: ' + $Blocked)
    }
}
# A certificate path on a share (\\server\share\...) is read by this session's account on the
# server. Over remoting (psbridge run, Enter-PSSession) the server cannot pass the operator's
# credentials on to a third machine (the "second hop"), so the share refuses and the file looks
# missing although it is there. setup.ps1 run at the server's own console can read it.
$SecondHop = ' (a UNC path: over a remote session the server cannot pass your credentials on to the share - the second hop - so a file that exists looks missing. Copy the file to a local folder on the server and set that path in the parameters, or connect with CredSSP: psbridge run --auth credssp.)'
if (-not (Test-Path -LiteralPath $PfxPath -PathType Leaf)) {
    $Problems.Add('The PFX file was not found: ' + $PfxPath + $(if ($PfxPath.StartsWith('\\')) { $SecondHop } else { '' }))
}
if (-not (Test-Path -LiteralPath $CerPath -PathType Leaf)) {
    $Problems.Add('The public certificate (.cer) was not found: ' + $CerPath + $(if ($CerPath.StartsWith('\\')) { $SecondHop } else { '' }) + ' (export it from the PFX with: psbridge cert export-cer).')
}

# Microsoft Graph PowerShell needs SDK v2 (Connect-MgGraph -AccessToken takes a SecureString
# from v2 on) and, on Windows PowerShell 5.1, .NET Framework 4.7.2 or later (Release 461808).
$GraphAuthentication = Get-Module -ListAvailable -Name 'Microsoft.Graph.Authentication' | Sort-Object -Property Version -Descending | Select-Object -First 1
if ($GraphAuthentication -and $GraphAuthentication.Version.Major -lt 2) {
    $Problems.Add('Microsoft.Graph.Authentication ' + $GraphAuthentication.Version + ' is older than 2.0, whose Connect-MgGraph -AccessToken takes a SecureString (Update-Module Microsoft.Graph).')
}
$NetRelease = (Get-ItemProperty -LiteralPath 'HKLM:\SOFTWARE\Microsoft\NET Framework Setup\NDP\v4\Full' -ErrorAction SilentlyContinue).Release
if ($null -eq $NetRelease -or [int]$NetRelease -lt 461808) {
    $Problems.Add('.NET Framework 4.7.2 or later is required by Microsoft Graph PowerShell on Windows PowerShell 5.1; this server has Release ' + $NetRelease + ' (4.7.2 is 461808).')
}
elseif ($GraphAuthentication) {
    foreach ($Module in @('Microsoft.Graph.Authentication', 'Microsoft.Graph.Applications', 'Microsoft.Graph.Identity.DirectoryManagement')) {
        try {
            Import-Module $Module -ErrorAction Stop
        }
        catch {
            $Problems.Add('Import-Module ' + $Module + ' failed: ' + $_.Exception.Message)
        }
    }
    # The parameters the later steps pass, tested on the imported cmdlets: early 2.x releases lack
    # some (Connect-MgGraph -NoWelcome first shipped in 2.4.0).
    $ConnectParameters = @('AccessToken', 'ClientId', 'TenantId', 'CertificateThumbprint', 'Scopes', 'ContextScope', 'Environment', 'NoWelcome')
    $UpdateParameters = @('ServicePrincipalId', 'KeyCredentials', 'ServicePrincipalNames')
    foreach ($Check in @(@{ Command = 'Connect-MgGraph'; Parameters = $ConnectParameters }, @{ Command = 'Update-MgServicePrincipal'; Parameters = $UpdateParameters })) {
        $Found = Get-Command -Name $Check.Command -ErrorAction SilentlyContinue
        if ($null -eq $Found) {
            $Problems.Add($Check.Command + ' is not available after Import-Module (Update-Module Microsoft.Graph).')
            continue
        }
        foreach ($Name in $Check.Parameters) {
            if (-not $Found.Parameters.ContainsKey($Name)) {
                $Problems.Add($Check.Command + ' ' + $Found.Version + ' (' + $Found.Source + ') has no -' + $Name + ', which the steps use: install Microsoft.Graph 2.28.0 or later (Install-Module Microsoft.Graph -MinimumVersion 2.28.0 -Scope AllUsers).')
            }
        }
    }
    # Update-MgServicePrincipal -KeyCredentials is broken in Microsoft.Graph.Applications 2.26.x
    # ("Cannot convert the literal ... to the expected type 'Edm.Binary'", msgraph-sdk-powershell
    # #3170) and 2.27.x ("The value for the property "usage" ... is invalid", #3305); fixed in 2.28.
    $Applications = Get-Module -Name 'Microsoft.Graph.Applications' | Sort-Object -Property Version -Descending | Select-Object -First 1
    if ($Applications -and $Applications.Version.Major -eq 2 -and ($Applications.Version.Minor -eq 26 -or $Applications.Version.Minor -eq 27)) {
        $Problems.Add('Microsoft.Graph.Applications ' + $Applications.Version + ' is loaded: Update-MgServicePrincipal -KeyCredentials fails in 2.26.x and 2.27.x (msgraph-sdk-powershell issues #3170, #3305), and step 06 (spn) writes key credentials with it. Install 2.28.0 or later (Install-Module Microsoft.Graph.Applications -MinimumVersion 2.28.0 -Scope AllUsers) and remove 2.26/2.27 (Uninstall-Module Microsoft.Graph.Applications -RequiredVersion ' + $Applications.Version + ').')
    }
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
