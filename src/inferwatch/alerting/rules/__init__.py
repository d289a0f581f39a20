"""The Prometheus rules, declared as data: one module per team's alerts, and the recording rules.

``spec`` defines an alert entry (name, summary, PromQL and description templates) and renders
it; ``ops``, ``data``, ``ml`` and ``jobs`` hold each team's group of entries; ``recording``
builds the recording rules the alerts and dashboards read. ``inferwatch.alerting.render``
writes them all to files.
"""
