"""sonoflow.stream.web: the browser viewer (aiohttp, WebSocket)."""
