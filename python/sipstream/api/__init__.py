"""The HTTP API: WCS-compatible REST, WHEP and the player page."""
