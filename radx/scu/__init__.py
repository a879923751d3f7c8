"""The sending side: C-ECHO and C-STORE SCU over the upper layer's requestor role."""
