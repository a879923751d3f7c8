"""PS3.7 DIMSE, pure: command sets, message assembly, C-ECHO and C-STORE."""
