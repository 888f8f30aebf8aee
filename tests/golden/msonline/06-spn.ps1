# psbridge step 06/08: spn - Set the Azure Active Directory Service Principal Name (SPN) in SharePoint
# Article, step 6: add the certificate as an asymmetric key credential of the Dynamics CRM
# service principal and add the SPN <CRM app id>/<root domain>.
# Changes state: yes (Entra ID: the service principal's credentials and SPNs).
# Deviation from the article: the SPN is built by concatenation, not in a double-quoted string.
param()
$ErrorActionPreference = 'Stop'

if (-not $CredentialValue) {
    throw 'Step 05 (set-certificate) has not run in this session: $CredentialValue is empty.'
}
$RootDomain = '*.contoso.com'
$CRMAppId = '00000007-0000-0000-c000-000000000000'
# Deviation from the article: the credential gets the validity of the certificate read in
# step 05 as -StartDate and -EndDate ([DateTime], given in UTC). Without them it would start
# today and end one year later, whatever the certificate says; the cmdlet's documentation
# requires both within the certificate's validity, "otherwise an OAuth token will not be issued".
$StartDate = $Certificate.NotBefore.ToUniversalTime()
$EndDate = $Certificate.NotAfter.ToUniversalTime()
# Deviation from the article: no second credential when one with this certificate's value
# that is valid through its expiry exists (a re-run after a failure later in this step).
$Existing = @(Get-MsolServicePrincipalCredential -AppPrincipalId $CRMAppId -ReturnKeyValues $true | Where-Object { $null -ne $_ -and $_.Value -eq $CredentialValue -and $_.EndDate.ToUniversalTime() -ge $EndDate.AddSeconds(-1) })
if ($Existing.Count -gt 0) {
    Write-Output ('Credential already in place: ' + $Certificate.Thumbprint + ', valid until ' + $EndDate.ToString('o') + '.')
}
else {
    New-MsolServicePrincipalCredential -AppPrincipalId $CRMAppId -Type asymmetric -Usage Verify -Value $CredentialValue -StartDate $StartDate -EndDate $EndDate
}
$CRM = Get-MsolServicePrincipal -AppPrincipalId $CRMAppId
$ServicePrincipalName = $CRM.ServicePrincipalNames
$CRMServicePrincipalName = $CRMAppId + '/' + $RootDomain
$null = $ServicePrincipalName.Remove($CRMServicePrincipalName)
$ServicePrincipalName.Add($CRMServicePrincipalName)
Set-MsolServicePrincipal -AppPrincipalId $CRMAppId -ServicePrincipalNames $ServicePrincipalName
