"""User modelling: RFM and behaviour profiles, segments, repurchase prediction (framework-free)."""
