"""Ingest: bytes to events. Request and response bodies (codecs), pushed events, CloudEvents from
payload loggers and ground truth, and the one normalisation of values (``values``)."""
