"""psbridge: server-based authentication between Dynamics 365 CE (on-premises) and SharePoint Online."""

__version__ = "0.4.0"
