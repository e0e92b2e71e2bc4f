"""Real-call test harness: the local Asterisk, sipp callers and phones, speech fixtures."""
