"""Pure statistics: fixed-bin sketches, divergences and drift detectors. No I/O, no clocks."""
