"""The sagelab WebSocket server: routes, sessions, auth and the conversation store."""
