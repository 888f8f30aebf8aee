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
$CurrentPrincipalId = (Get-CrmAdvancedSetting -ConfigurationEntityName 'ServerSettings' -Setting 'S2SDefaultAuthorizationServerPrincipalId').Attributes | Where-Object { $_.Key -eq 'S2SDefaultAuthorizationServerPrincipalId' } | ForEach-Object { $_.Value }
$CurrentMetadataUrl = (Get-CrmAdvancedSetting -ConfigurationEntityName 'ServerSettings' -Setting 'S2SDefaultAuthorizationServerMetadataUrl').Attributes | Where-Object { $_.Key -eq 'S2SDefaultAuthorizationServerMetadataUrl' } | ForEach-Object { $_.Value }
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
