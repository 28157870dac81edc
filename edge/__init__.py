"""Edge agent: runs on a home gateway, detects falls, inactivity, bed exit and wandering, forwards upstream."""
