"""Test support: the loopback WinRM peer, certificate factories, probe states, the PowerShell grammar."""
