"""HTTP surface. Only the app factory imports this package."""
