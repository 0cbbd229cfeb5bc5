"""The bag of freebies: one module per trick, each a pure core with injectable randomness."""
