# psbridge step 04/08: connect - Connect to Office 365
# Article, step 4: $msolcred = get-credential; connect-msolservice -credential $msolcred
# The account must be an Office 365 Global Administrator; accounts with MFA cannot use -Credential.
# Changes state: no (session only).
# Deviation from the article: the credential may come in as a parameter (psbridge run passes a
# PSCredential whose password is a SecureString); Get-Credential prompts only when it is absent.
# Deviation from the article: the connected tenant (Get-MsolCompanyInformation's ObjectId, the
# company's unique ID) is compared with the package's before step 06 writes to it.
param(
    [pscredential] $Credential
)
$ErrorActionPreference = 'Stop'

if ($null -eq $Credential) {
    $Credential = Get-Credential -Message 'Office 365 Global Administrator'
}
$msolcred = $Credential
Connect-MsolService -Credential $msolcred
$Company = Get-MsolCompanyInformation
# The parameters give no tenant ID (sharepoint.tenant_id): the connected tenant is shown, not compared.
Write-Output ('Connected to tenant ' + $Company.ObjectId + ' (' + $Company.DisplayName + ').')
