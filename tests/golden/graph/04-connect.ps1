# psbridge step 04/08: connect - Connect to Microsoft Graph
# Profile graph: Connect-MgGraph instead of the retired Connect-MsolService.
# Changes state: no (session only).
# -Environment is the cloud of the SharePoint site's host: Global for
# .sharepoint.com, USGov for GCC High's .sharepoint.us (names Get-MgEnvironment lists).
param(
    [securestring] $AccessToken
)
$ErrorActionPreference = 'Stop'

$Environment = 'Global'
if ($null -ne $AccessToken) {
    Connect-MgGraph -AccessToken $AccessToken -Environment $Environment -NoWelcome
}
else {
    Connect-MgGraph -Scopes 'Application.ReadWrite.All', 'Organization.Read.All' -Environment $Environment -NoWelcome
}
$Context = Get-MgContext
Write-Output ('Connected to tenant ' + $Context.TenantId + ' as ' + $Context.Account + $Context.AppName + '.')
