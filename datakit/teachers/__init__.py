"""Teachers: OpenAI-compatible endpoints (remote or the bundled local one) behind one client."""
