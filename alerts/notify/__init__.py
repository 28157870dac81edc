"""Notification channels: live (MQTT), e-mail (SMTP), signed webhooks, bracelet commands; and when to send."""
