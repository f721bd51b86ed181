//! Reliability: what the bridge does with hostile, broken or excessive input and traffic.

mod hostile;
