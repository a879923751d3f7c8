"""The Twisted side: one Protocol per association, a Factory for the server."""
