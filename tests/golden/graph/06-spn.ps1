# psbridge step 06/08: spn - Add the certificate and the SPN to the Dynamics CRM service principal
# Profile graph: the article's step 6 with Microsoft Graph. The key credential is added by
# reading the service principal's KeyCredentials and writing them all back with
# Update-MgServicePrincipal (Add-MgServicePrincipalKey would need proof of possession of an
# existing key); the SPN is merged into ServicePrincipalNames, which Update-MgServicePrincipal
# replaces as a whole, so no existing name is dropped. A credential is the certificate's when
# its key equals $CredentialValue (keyCredentials.key is returned only when one service
# principal is read with -Property, that is $select).
# A credential of the certificate counts only while it is valid through the certificate's
# NotAfter; one that ends earlier is replaced. Other credentials are written back unchanged.
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

$NotAfter = $Certificate.NotAfter.ToUniversalTime()
$KeyCredentials = New-Object 'System.Collections.Generic.List[object]'
$HasCertificate = $false
$Replaced = 0
# The certificate is recognised by its key (the base64 of its raw data), as Microsoft's
# ConfigureCrmServerSideSync.ps1 does: customKeyIdentifier holds the thumbprint's text, not
# its bytes. The SDK returns $null for an empty collection, which @() would keep as one element.
foreach ($Key in @($CRM.KeyCredentials | Where-Object { $null -ne $_ })) {
    if ($null -eq $Key.Key) {
        throw ('Microsoft Graph returned the key credential ' + $Key.KeyId + ' of the Dynamics CRM service principal without its key: it can be neither compared nor written back.')
    }
    if ([System.Convert]::ToBase64String($Key.Key) -eq $CredentialValue) {
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
    $KeyCredentials.Add(@{
        Type = $Key.Type; Usage = $Key.Usage; Key = $Key.Key; KeyId = $Key.KeyId
        StartDateTime = $Key.StartDateTime; EndDateTime = $Key.EndDateTime
        DisplayName = $Key.DisplayName; CustomKeyIdentifier = $Key.CustomKeyIdentifier
    })
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
Update-MgServicePrincipal -ServicePrincipalId $CRM.Id @Update
Write-Output ('Updated the Dynamics CRM service principal: credential added: ' + (-not $HasCertificate) + '; credentials of this certificate that ended before ' + $NotAfter.ToString('o') + ' replaced: ' + $Replaced + '; SPN added: ' + (-not $HasName) + '.')
