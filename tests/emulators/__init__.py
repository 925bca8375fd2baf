"""Local emulators of third-party services for integration tests (loopback only)."""
