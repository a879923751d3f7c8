"""PS3.8 upper layer, pure: PDU codec, framing, state machine, negotiation."""
