"""Alerts: the rule engine and the reminder -> alarm -> handling loop, with escalation and notification."""
