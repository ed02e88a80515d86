"""SIP user agent: UDP transport and transactions, registration, outgoing calls."""
