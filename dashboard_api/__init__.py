"""Dashboard API: REST, WebSocket and the web console for nurses, grid staff and families."""
