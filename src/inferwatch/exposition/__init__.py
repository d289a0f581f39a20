"""Exposition: the metric contract of the request path and the wrapper that runs every custom
collector in isolation at scrape time."""
