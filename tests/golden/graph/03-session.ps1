# psbridge step 03/08: session - Prepare the PowerShell session
# Profile graph: imports the Microsoft Graph PowerShell modules the later steps use. The
# article's Enable-PSRemoting and New-PSSession served the MSOnline session and are left out.
# Changes state: no (session only).
param()
$ErrorActionPreference = 'Stop'

Import-Module Microsoft.Graph.Authentication
Import-Module Microsoft.Graph.Applications
Import-Module Microsoft.Graph.Identity.DirectoryManagement
