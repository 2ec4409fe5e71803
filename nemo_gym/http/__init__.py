"""HTTP between our servers: ServerClient, on aiohttp."""
