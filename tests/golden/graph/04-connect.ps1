# psbridge step 04/08: connect - Connect to Microsoft Graph
# Profile graph: Connect-MgGraph instead of the retired Connect-MsolService.
# Changes state: no (session only).
param(
    [securestring] $AccessToken
)
$ErrorActionPreference = 'Stop'

if ($null -ne $AccessToken) {
    Connect-MgGraph -AccessToken $AccessToken -NoWelcome
}
else {
    Connect-MgGraph -Scopes 'Application.ReadWrite.All', 'Organization.Read.All' -NoWelcome
}
$Context = Get-MgContext
Write-Output ('Connected to tenant ' + $Context.TenantId + ' as ' + $Context.Account + $Context.AppName + '.')
