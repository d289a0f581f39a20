"""Monitors: what is computed from the windowed events. Each monitor splits into a pure
``evaluate``, an ``engine`` that owns its thread and state, and a ``collector`` that only reads."""
