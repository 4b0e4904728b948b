//! Simulated and real SMS vendors, and their fee schedules.
