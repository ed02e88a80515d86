"""Ways a stream leaves the server: WebRTC (WHEP) today; RTMP and recording later."""
