# psbridge step 08/08: tenant-id - Get the SharePoint Online tenant ID
# Article, "Get the SharePoint online tenant ID": (Get-MsolCompanyInformation).ObjectID is the
# tenant ID to enter in the Enable Server-Based SharePoint Integration wizard.
# Changes state: no.
param()
$ErrorActionPreference = 'Stop'

$CRMContextId = (Get-MsolCompanyInformation).ObjectID
$CRMContextId
