# psbridge step 07/08: crm-settings - Configure the Microsoft Dynamics 365 Server for server-based authentication
# Article, step 7, as in profile msonline; profile graph first reads both ServerSettings values
# and says "already configured" when they are set.
# Changes state: yes (CRM configuration database), and nothing when both values are in place.
param()
$ErrorActionPreference = 'Stop'

if (-not (Get-PSSnapin -Name 'Microsoft.Crm.PowerShell' -ErrorAction SilentlyContinue)) {
    Add-PSSnapin Microsoft.Crm.PowerShell
}
$PrincipalId = '00000001-0000-0000-c000-000000000000'
$MetadataUrl = 'https://accounts.accesscontrol.windows.net/metadata/json/1'
# One reader of a ServerSettings value, for the crm probe, the crm-settings step (graph) and verify.
# Get-CrmAdvancedSetting's output is not documented (its CRM 2015 reference page lists no output
# type); the Deployment SDK's RetrieveAdvancedSettingsResponse.Entity is a ConfigurationEntity that
# "contains an collection of attribute values". Both shapes seen are read: an entity whose
# .Attributes holds key/value pairs (the value is the pair whose Key is the setting), or the value
# itself (a string or a GUID). Anything else stops here, naming the type it got, so that no
# caller mistakes an unknown shape for "not set". $null: the setting is not set.
function Get-PSBridgeCrmServerSetting([string] $Name) {
    $Read = @(Get-CrmAdvancedSetting -ConfigurationEntityName 'ServerSettings' -Setting $Name | Where-Object { $null -ne $_ })
    if ($Read.Count -eq 0) {
        return $null
    }
    if ($Read.Count -gt 1) {
        throw ('Get-CrmAdvancedSetting -Setting ' + $Name + ' returned ' + $Read.Count + ' objects (the first a ' + $Read[0].GetType().FullName + '), not one: psbridge does not guess which holds the value.')
    }
    $Value = $Read[0]
    if ($null -ne $Value.PSObject.Properties['Attributes']) {
        $Pairs = @($Value.Attributes | Where-Object { $null -ne $_ -and $_.Key -eq $Name })
        if ($Pairs.Count -eq 0 -or $null -eq $Pairs[0].Value) {
            return $null
        }
        return [string]$Pairs[0].Value
    }
    if ($Value -is [string] -or $Value -is [guid]) {
        return [string]$Value
    }
    throw ('Get-CrmAdvancedSetting -Setting ' + $Name + ' returned a ' + $Value.GetType().FullName + ', neither an entity with Attributes nor a string or GUID value: psbridge does not read this shape; nothing was changed by this read.')
}
$CurrentPrincipalId = Get-PSBridgeCrmServerSetting 'S2SDefaultAuthorizationServerPrincipalId'
$CurrentMetadataUrl = Get-PSBridgeCrmServerSetting 'S2SDefaultAuthorizationServerMetadataUrl'
if ([string]$CurrentPrincipalId -eq $PrincipalId -and [string]$CurrentMetadataUrl -eq $MetadataUrl) {
    Write-Output 'Already configured: ServerSettings S2SDefaultAuthorizationServerPrincipalId and S2SDefaultAuthorizationServerMetadataUrl are set.'
    return
}
$setting = New-Object 'Microsoft.Xrm.Sdk.Deployment.ConfigurationEntity'
$setting.LogicalName = 'ServerSettings'
$setting.Attributes = New-Object 'Microsoft.Xrm.Sdk.Deployment.AttributeCollection'
$attribute1 = New-Object 'System.Collections.Generic.KeyValuePair[String, Object]' ('S2SDefaultAuthorizationServerPrincipalId', $PrincipalId)
$setting.Attributes.Add($attribute1)
$attribute2 = New-Object 'System.Collections.Generic.KeyValuePair[String, Object]' ('S2SDefaultAuthorizationServerMetadataUrl', $MetadataUrl)
$setting.Attributes.Add($attribute2)
Set-CrmAdvancedSetting -Entity $setting
