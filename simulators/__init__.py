"""Device simulators: bracelets, infrared sensors, scenarios with ground truth, fleets."""
