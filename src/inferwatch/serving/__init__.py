"""Serving: the HTTP edges. The proxy in front of the model server, its routes and shadow
mirroring, and the admin port (metrics, probes, push endpoints)."""
