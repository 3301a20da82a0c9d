"""Every Hypothesis strategy used by the property tests lives here."""
