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
New-MsolServicePrincipalCredential -AppPrincipalId $CRMAppId -Type asymmetric -Usage Verify -Value $CredentialValue
$CRM = Get-MsolServicePrincipal -AppPrincipalId $CRMAppId
$ServicePrincipalName = $CRM.ServicePrincipalNames
$CRMServicePrincipalName = $CRMAppId + '/' + $RootDomain
$null = $ServicePrincipalName.Remove($CRMServicePrincipalName)
$ServicePrincipalName.Add($CRMServicePrincipalName)
Set-MsolServicePrincipal -AppPrincipalId $CRMAppId -ServicePrincipalNames $ServicePrincipalName
