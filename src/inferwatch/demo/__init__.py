"""The demo: a loan-approval model server, drifting traffic, and a runner that wires them up."""
