"""WardWatch simulators: patient scenarios and devices that speak the real protocols."""
