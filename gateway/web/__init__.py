"""HTTP mechanics every request passes: the middlewares, client connections (keep-alive and
header deadline), paced and capped bodies, requests in flight per client address, the headers a
proxy forwards, aiohttp's own log records made safe, the open-file limit."""
