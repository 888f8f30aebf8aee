# psbridge step 07/08: crm-settings - Configure the Microsoft Dynamics 365 Server for server-based authentication
# Article, step 7: set ServerSettings S2SDefaultAuthorizationServerPrincipalId and
# S2SDefaultAuthorizationServerMetadataUrl with Set-CrmAdvancedSetting.
# Changes state: yes (CRM configuration database).
# Deviation from the article: the snap-in is added only when it is not loaded yet, so that a
# second run in the same window does not fail on "already added".
param()
$ErrorActionPreference = 'Stop'

if (-not (Get-PSSnapin -Name 'Microsoft.Crm.PowerShell' -ErrorAction SilentlyContinue)) {
    Add-PSSnapin Microsoft.Crm.PowerShell
}
$setting = New-Object 'Microsoft.Xrm.Sdk.Deployment.ConfigurationEntity'
$setting.LogicalName = 'ServerSettings'
$setting.Attributes = New-Object 'Microsoft.Xrm.Sdk.Deployment.AttributeCollection'
$attribute1 = New-Object 'System.Collections.Generic.KeyValuePair[String, Object]' ('S2SDefaultAuthorizationServerPrincipalId', '00000001-0000-0000-c000-000000000000')
$setting.Attributes.Add($attribute1)
$attribute2 = New-Object 'System.Collections.Generic.KeyValuePair[String, Object]' ('S2SDefaultAuthorizationServerMetadataUrl', 'https://accounts.accesscontrol.windows.net/metadata/json/1')
$setting.Attributes.Add($attribute2)
Set-CrmAdvancedSetting -Entity $setting
