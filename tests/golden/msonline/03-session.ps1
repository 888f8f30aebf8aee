# psbridge step 03/08: session - Prepare the PowerShell session
# Article, step 3: Enable-PSRemoting -force; New-PSSession; Import-Module MSOnline -force;
#   Import-Module MSOnlineExt -force
# Changes state: only when run locally and WinRM does not answer, where Enable-PSRemoting
# configures and restarts WinRM.
# Deviations from the article: Enable-PSRemoting runs only in a local session ($PSSenderInfo is
# set in a remote one, where restarting WinRM would cut the session itself) and only when
# Test-WSMan fails, so that continuing with setup.ps1 -FromStep N, which runs this session step
# again, does not restart WinRM on a server that already has remoting. New-PSSession is left
# out: the loopback session it opened was never used. MSOnlineExt is not imported (a
# third-party module, archived in 2020, that no step uses).
param()
$ErrorActionPreference = 'Stop'

if ($null -eq $PSSenderInfo) {
    $WinRMAnswers = $true
    try {
        $null = Test-WSMan -ComputerName 'localhost' -ErrorAction Stop
    }
    catch {
        $WinRMAnswers = $false
    }
    if (-not $WinRMAnswers) {
        Enable-PSRemoting -Force
    }
}
Import-Module MSOnline -Force
