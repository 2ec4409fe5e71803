"""Server runtime shared by every server: app factory, sessions, errors, startup."""
