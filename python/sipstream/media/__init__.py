"""Media of the SIP leg: ports, SDP negotiation, RTP sockets, and the stream hub."""
