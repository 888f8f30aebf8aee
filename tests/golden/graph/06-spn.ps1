# psbridge step 06/08: spn - Add the certificate and the SPN to the Dynamics CRM service principal
# Profile graph: the article's step 6 with Microsoft Graph. The key credential is added by
# reading the service principal's KeyCredentials and writing the collection back with
# Update-MgServicePrincipal (Add-MgServicePrincipalKey would need proof of possession of an
# existing key); the SPN is merged into ServicePrincipalNames, which Update-MgServicePrincipal
# replaces as a whole, so no existing name is dropped. A credential is the certificate's when
# its key equals $CredentialValue (keyCredentials.key is returned only when one service
# principal is read with -Property, that is $select).
# Every other credential is sent back by its keyId, without its key, as Microsoft's
# ConfigureCrmServerSideSync.ps1 does (it drops key and displayName from the credentials it
# keeps); only the new certificate's credential carries its key. A credential Graph returns
# without its key (a legacy one) is kept the same way: it cannot be this certificate's, and it
# does not stop the step.
# A credential of the certificate counts only while it is valid through the certificate's
# NotAfter; one that ends earlier is replaced.
# Graph may cap a key credential's end (at most one year after its start in Microsoft's "Add a
# certificate to an app using Microsoft Graph"; an app management policy can set a limit):
# after the write the credential is read back (six reads, five seconds apart), and a refused,
# missing or shortened credential stops the step, saying what Graph stored and what to do. It
# is never written again in a loop.
# Changes state: yes (Entra ID), and nothing when both are already in place.
param()
$ErrorActionPreference = 'Stop'

if (-not $CredentialValue) {
    throw 'Step 05 (set-certificate) has not run in this session: $CredentialValue is empty.'
}
$RootDomain = '*.contoso.com'
$CRMAppId = '00000007-0000-0000-c000-000000000000'
$CRMServicePrincipalName = $CRMAppId + '/' + $RootDomain
$Found = @(Get-MgServicePrincipal -Filter ('appId eq ''{0}''' -f $CRMAppId))
if ($Found.Count -ne 1) {
    throw ('Expected one Dynamics CRM service principal (appId ' + $CRMAppId + ') in this tenant, found ' + $Found.Count + '.')
}
# keyCredentials.key is returned only when one service principal is read with $select.
$CRM = Get-MgServicePrincipal -ServicePrincipalId $Found[0].Id -Property 'id', 'appId', 'keyCredentials', 'servicePrincipalNames'

$NotBefore = $Certificate.NotBefore.ToUniversalTime()
$NotAfter = $Certificate.NotAfter.ToUniversalTime()
$KeyCredentials = New-Object 'System.Collections.Generic.List[object]'
$KeptIds = New-Object 'System.Collections.Generic.List[string]'
$Keyless = New-Object 'System.Collections.Generic.List[string]'
$HasCertificate = $false
$Replaced = 0
# The certificate is recognised by its key (the base64 of its raw data), as Microsoft's
# ConfigureCrmServerSideSync.ps1 does: customKeyIdentifier holds the thumbprint's text, not
# its bytes. The SDK returns $null for an empty collection, which @() would keep as one element.
foreach ($Key in @($CRM.KeyCredentials | Where-Object { $null -ne $_ })) {
    if ($null -eq $Key.Key -or $Key.Key.Length -eq 0) {
        # No key bytes to compare: not this certificate's credential; kept by its keyId.
        $Keyless.Add([string]$Key.KeyId)
    }
    elseif ([System.Convert]::ToBase64String($Key.Key) -eq $CredentialValue) {
        # A credential of this certificate counts only while it is valid through the
        # certificate's NotAfter (one second of slack for the stored precision). One that ends
        # earlier (expired, or the one-year default of New-MsolServicePrincipalCredential) is
        # left out of the collection and replaced below by one with the certificate's validity.
        if ($null -ne $Key.EndDateTime -and $Key.EndDateTime.ToUniversalTime() -ge $NotAfter.AddSeconds(-1)) {
            $HasCertificate = $true
        }
        else {
            $Replaced++
            continue
        }
    }
    $KeyCredentials.Add(@{ KeyId = [string]$Key.KeyId; Type = $Key.Type; Usage = $Key.Usage; StartDateTime = $Key.StartDateTime; EndDateTime = $Key.EndDateTime })
    $KeptIds.Add([string]$Key.KeyId)
}
if ($Keyless.Count -gt 0) {
    Write-Output ('Microsoft Graph returned ' + $Keyless.Count + ' key credential(s) of the Dynamics CRM service principal without their key (key id ' + ($Keyless -join ', ') + '): they are kept as they are, by key id.')
}
if (-not $HasCertificate) {
    $KeyCredentials.Add(@{
        Type = 'AsymmetricX509Cert'; Usage = 'Verify'; Key = $CERCertificateBin
        StartDateTime = $Certificate.NotBefore.ToUniversalTime(); EndDateTime = $NotAfter
        DisplayName = $Certificate.Subject
    })
}
$Names = New-Object 'System.Collections.Generic.List[string]'
foreach ($Name in @($CRM.ServicePrincipalNames)) {
    $Names.Add($Name)
}
$HasName = $Names -contains $CRMServicePrincipalName
if (-not $HasName) {
    $Names.Add($CRMServicePrincipalName)
}

$Update = @{}
if (-not $HasCertificate -or $Replaced -gt 0) {
    $Update['KeyCredentials'] = $KeyCredentials.ToArray()
}
if (-not $HasName) {
    $Update['ServicePrincipalNames'] = $Names.ToArray()
}
if ($Update.Count -eq 0) {
    Write-Output ('Already configured: the credential ' + $Certificate.Thumbprint + ' and the SPN ' + $CRMServicePrincipalName + ' are in place.')
    return
}
try {
    Update-MgServicePrincipal -ServicePrincipalId $CRM.Id @Update
}
catch {
    throw ('Microsoft Graph refused the update of the Dynamics CRM service principal (key credential of ' + $Certificate.Thumbprint + ' requested valid ' + $NotBefore.ToString('o') + ' to ' + $NotAfter.ToString('o') + '): ' + $_.Exception.Message + [Environment]::NewLine + 'Nothing is reported as done. If Graph refused the end date (it may allow at most one year, or a policy of the tenant less), use a certificate valid for at most one year (psbridge cert new --days 365, or --like OLD --days 365 for a renewal) and render the package again, or ask the tenant''s administrators to exempt this change from the app management policy.')
}
Write-Output ('Updated the Dynamics CRM service principal: credential added: ' + (-not $HasCertificate) + '; credentials of this certificate that ended before ' + $NotAfter.ToString('o') + ' replaced: ' + $Replaced + '; other credentials kept by key id: ' + $KeptIds.Count + '; SPN added: ' + (-not $HasName) + '.')

# Read back: the certificate's credential with the end requested, and every credential kept.
# A directory write may take a moment to show: six reads, five seconds apart; nothing is written again.
$Shown = @()
$Missing = @()
for ($Attempt = 1; $Attempt -le 6; $Attempt++) {
    if ($Attempt -gt 1) {
        [System.Threading.Thread]::Sleep(5000)
    }
    $Check = Get-MgServicePrincipal -ServicePrincipalId $CRM.Id -Property 'id', 'keyCredentials'
    $Shown = @($Check.KeyCredentials | Where-Object { $null -ne $_ -and $null -ne $_.Key -and $_.Key.Length -gt 0 -and [System.Convert]::ToBase64String($_.Key) -eq $CredentialValue -and $null -ne $_.EndDateTime })
    $Ids = @($Check.KeyCredentials | Where-Object { $null -ne $_ } | ForEach-Object { [string]$_.KeyId })
    $Missing = @($KeptIds | Where-Object { $Ids -notcontains $_ })
    if ($Shown.Count -gt 0 -and $Missing.Count -eq 0) {
        break
    }
}
if ($Shown.Count -eq 0) {
    throw ('Read back: the Dynamics CRM service principal does not show the key credential of ' + $Certificate.Thumbprint + ' after 30 seconds; the step is not reported as done. Check the service principal''s key credentials (Get-MgServicePrincipal -Property keyCredentials), then run the step again.')
}
if ($Missing.Count -gt 0) {
    throw ('Read back: the Dynamics CRM service principal no longer shows the key credential(s) ' + ($Missing -join ', ') + ' it held before: add them back by hand from their certificates.')
}
$ShownEnd = @($Shown | ForEach-Object { $_.EndDateTime.ToUniversalTime() } | Sort-Object -Descending)[0]
if ($ShownEnd -lt $NotAfter.AddSeconds(-1)) {
    throw ('Read back: Microsoft Graph shortened the key credential of ' + $Certificate.Thumbprint + ': requested endDateTime ' + $NotAfter.ToString('o') + ' (the certificate''s NotAfter), stored ' + $ShownEnd.ToString('o') + '. It stays and works until then; SharePoint Online stops trusting CRM''s tokens after it. The step is not reported as done, and running it again would be shortened the same way. Use a certificate valid for at most one year (psbridge cert new --days 365, or --like OLD --days 365 for a renewal) and render a renewal with it before ' + $ShownEnd.ToString('o') + ', or ask the tenant''s administrators to exempt the Dynamics CRM service principal from the app management policy (keyCredentials, asymmetricKeyLifetime).')
}
Write-Output ('Read back: the key credential of ' + $Certificate.Thumbprint + ' is on the Dynamics CRM service principal, valid through ' + $ShownEnd.ToString('o') + '.')
