"""MC-MED reading, synthetic cohorts and the segment corpus."""
