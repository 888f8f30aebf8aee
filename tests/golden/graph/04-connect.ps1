# psbridge step 04/08: connect - Connect to Microsoft Graph
# Profile graph: Connect-MgGraph instead of the retired Connect-MsolService.
# Changes state: no (session only).
# -Environment is the cloud of the SharePoint site's host: Global for
# .sharepoint.com, USGov for GCC High's .sharepoint.us (names Get-MgEnvironment lists).
# -ContextScope Process keeps the sign-in to this PowerShell process (the default, CurrentUser,
# caches it for every later session of the account); setup.ps1 ends with Disconnect-MgGraph.
# -AccessToken has neither -TenantId nor -ContextScope: on every path the connected tenant is
# compared with the package's before any later step writes.
param(
    [securestring] $AccessToken
)
$ErrorActionPreference = 'Stop'

$Environment = 'Global'
if ($null -ne $AccessToken) {
    Connect-MgGraph -AccessToken $AccessToken -Environment $Environment -NoWelcome
}
else {
    Connect-MgGraph -Scopes 'Application.ReadWrite.All', 'Organization.Read.All' -Environment $Environment -NoWelcome -ContextScope Process
}
$Context = Get-MgContext
# The parameters give no tenant ID (sharepoint.tenant_id): the connected tenant is shown, not compared.
Write-Output ('Connected to tenant ' + $Context.TenantId + ' as ' + $Context.Account + $Context.AppName + '.')
