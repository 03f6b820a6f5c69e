"""Tools around the gateway: the console entry point, Admin API routes, the dev gateway, the
Triton stand-in and the demo. Nothing here is on the gateway's request path."""
