"""HTTP clients: the pooled aiohttp-backed httpx client and ServerClient."""
