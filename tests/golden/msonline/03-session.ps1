# psbridge step 03/08: session - Prepare the PowerShell session
# Article, step 3: Enable-PSRemoting -force; New-PSSession; Import-Module MSOnline -force;
#   Import-Module MSOnlineExt -force
# Changes state: only when run locally, where Enable-PSRemoting configures and restarts WinRM.
# Deviations from the article: Enable-PSRemoting and New-PSSession run only in a local session
# ($PSSenderInfo is set in a remote one, where restarting WinRM would cut the session itself);
# MSOnlineExt is not imported (a third-party module, archived in 2020, that no step uses).
param()
$ErrorActionPreference = 'Stop'

if ($null -eq $PSSenderInfo) {
    Enable-PSRemoting -Force
    New-PSSession
}
Import-Module MSOnline -Force
