# psbridge step 08/08: tenant-id - Get the SharePoint Online tenant ID
# Profile graph: (Get-MgOrganization).Id instead of (Get-MsolCompanyInformation).ObjectID; it is
# the tenant ID to enter in the Enable Server-Based SharePoint Integration wizard.
# Changes state: no.
param()
$ErrorActionPreference = 'Stop'

$CRMContextId = (Get-MgOrganization).Id
$CRMContextId
