"""Alerting: the thresholds file, PromQL, the rules of each team and their rendering, and the
actions an alert can start (an Alertmanager webhook receiver)."""
